"""The contract every registered method keeps, run over the registry: a method added as one file in
``adapterlib/methods/`` is tested here by being registered, with the configs its ``examples`` list.

For each example config, on a tiny random BERT: the adapted model starts at the base model (eager
and sdpa attention) or, for a method that cannot (prefix tuning), equals it with the adapter
disabled; the closed-form count equals the built model's trainable count; save then load gives
bit-identical logits; merging keeps the logits and unmerging restores every base weight bit for
bit (where the method merges); an insertion that fails leaves the model as it was; padding changes
nothing for the real tokens; gradient checkpointing gives the gradients of plain training.

The last tests register a throwaway method (LoRA with an extra fixed scale) after every module of
the package was imported, run the whole contract on it, and train it from the command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from adapterlib import PeftModel, get_peft_model
from adapterlib.config import TaskType
from adapterlib.counting import bert_parameter_count, count_parameters, expected_trainable_parameters
from adapterlib.methods import Method, Size, get_method, methods, register, unregister
from adapterlib.methods.lora import Lora, LoraConfig, LoraUpdate
from conftest import perturbed, refused_unchanged, tiny_classifier, tiny_config, tiny_train_argv

IMPLEMENTATIONS = ("eager", "sdpa")


def classifier_config(config):
    """``config`` for a sequence classifier (the head trains with the method)."""
    config.task_type = TaskType.SEQ_CLS
    return config


def base_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's own tensors by name, wherever sites put them."""
    return {
        n.replace(".base_layer", ""): t.clone()
        for n, t in model.state_dict().items()
        if ".adapters." not in n
    }


# ---------------------------------------------------------------- the contract, one function a promise


def starts_at_the_base_model(method: Method, config, batch) -> None:
    for implementation in IMPLEMENTATIONS:
        model = tiny_classifier(implementation)
        expected = model(**batch).logits
        peft_model = get_peft_model(model, classifier_config(config))
        if method.starts_at_base:
            assert torch.equal(peft_model(**batch).logits, expected), implementation
        else:
            assert not torch.equal(peft_model(**batch).logits, expected), "the method changes nothing"
            with peft_model.disable_adapter():
                torch.testing.assert_close(peft_model(**batch).logits, expected, rtol=0, atol=1e-6)


def closed_form_count_equals_the_built_model(method: Method, config, batch) -> None:
    for shape in ({}, {"intermediate_size": 48, "num_hidden_layers": 3}):
        model_config = tiny_config(num_labels=3, **shape)
        peft_model = get_peft_model(tiny_classifier(num_labels=3, **shape), classifier_config(config))
        trainable, total, _ = count_parameters(peft_model)
        inserted, head = method.parameter_count(model_config, config), 32 * 3 + 3
        assert inserted > 0 and trainable == inserted + head
        assert trainable == expected_trainable_parameters(model_config, config, num_labels=3)
        assert (
            total == bert_parameter_count(model_config, num_labels=3) + inserted + head
        )  # + the head's copy


def save_then_load_is_bit_exact(method: Method, config, batch, tmp_path) -> None:
    trained = perturbed(get_peft_model(tiny_classifier(), classifier_config(config))).eval()
    expected = trained(**batch).logits
    trained.save_pretrained(tmp_path)
    fresh = tiny_classifier()
    torch.manual_seed(99)
    fresh.classifier.reset_parameters()  # the adapter brings its own head
    loaded = PeftModel.from_pretrained(fresh, tmp_path)
    assert loaded.active_config == config
    assert torch.equal(loaded(**batch).logits, expected)


def merged_equals_unmerged_and_unmerge_is_exact(method: Method, config, batch) -> None:
    peft_model = perturbed(get_peft_model(tiny_classifier(), classifier_config(config))).eval()
    if not method.mergeable:
        with pytest.raises(ValueError, match="cannot be folded"):
            peft_model.merge_adapter()
        return
    before = base_tensors(peft_model.base_model)
    unmerged = peft_model(**batch).logits
    peft_model.merge_adapter()
    assert any(not torch.equal(v, before[k]) for k, v in base_tensors(peft_model.base_model).items())
    torch.testing.assert_close(peft_model(**batch).logits, unmerged, rtol=0, atol=1e-5)
    peft_model.unmerge_adapter()
    after = base_tensors(peft_model.base_model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(peft_model(**batch).logits, unmerged)


def a_failed_insertion_changes_nothing(method: Method, config, batch) -> None:
    wrong = {"layers.0.nothing.here": torch.zeros(1)}  # fails after the modules were inserted
    model = tiny_classifier()
    with refused_unchanged(model, ValueError, "do not match the adapter"):
        PeftModel(model, classifier_config(config), weights=wrong)
    peft_model = perturbed(get_peft_model(tiny_classifier(), classifier_config(config)))
    with refused_unchanged(peft_model, ValueError, "do not match the adapter"):
        peft_model.add_adapter("second", config, weights=wrong)
    assert peft_model.active_adapter == "default" and list(peft_model.peft_config) == ["default"]


def padding_changes_nothing(method: Method, config, batch) -> None:
    real = int(batch["attention_mask"][1].sum())
    for implementation in IMPLEMENTATIONS:
        peft_model = perturbed(get_peft_model(tiny_classifier(implementation), classifier_config(config)))
        padded = peft_model(**batch).logits[1]
        alone = peft_model(
            input_ids=batch["input_ids"][1:, :real], attention_mask=batch["attention_mask"][1:, :real]
        ).logits[0]
        torch.testing.assert_close(padded, alone, rtol=1e-5, atol=1e-5, msg=implementation)


def gradient_checkpointing_gives_the_same_gradients(method: Method, config, batch) -> None:
    gradients = []
    for checkpointing in (False, True):
        peft_model = perturbed(get_peft_model(tiny_classifier(), classifier_config(config))).train()
        if checkpointing:
            peft_model.base_model.activation_checkpointing_enable({"use_reentrant": False})
        torch.manual_seed(0)
        peft_model(**batch, labels=torch.tensor([0, 1])).loss.backward()
        gradients.append({n: p.grad for n, p in peft_model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys()
    for name, reference in gradients[0].items():
        assert gradients[1][name] is not None, f"{name} got no gradient under checkpointing"
        torch.testing.assert_close(gradients[1][name], reference, rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for n, g in gradients[0].items() if "classifier" not in n)


CONTRACT = [
    starts_at_the_base_model,
    closed_form_count_equals_the_built_model,
    save_then_load_is_bit_exact,
    merged_equals_unmerged_and_unmerge_is_exact,
    a_failed_insertion_changes_nothing,
    padding_changes_nothing,
    gradient_checkpointing_gives_the_same_gradients,
]


def run_check(check, method: Method, example: int, batch, tmp_path) -> None:
    config = method.example_configs()[example]
    if check is save_then_load_is_bit_exact:
        check(method, config, batch, tmp_path)
    else:
        check(method, config, batch)


# Each method's first example runs in the fast loop; its other examples (other code paths) are slow.
CASES = [
    pytest.param(method.name, i, id=f"{method.name}-{i}", marks=[pytest.mark.slow] if i else [])
    for method in methods()
    for i in range(len(method.examples))
]


@pytest.mark.parametrize("check", CONTRACT, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name, example", CASES)
def test_every_registered_method_keeps_the_contract(name, example, check, batch, tmp_path):
    run_check(check, get_method(name), example, batch, tmp_path)


def test_every_method_lists_example_configs_that_can_be_made():
    for method in methods():
        configs = method.example_configs()
        assert configs and all(type(c) is method.config_class for c in configs), method.name


# ---------------------------------------------------------------- an eighth method, added late


@dataclass
class ScaledLoraConfig(LoraConfig):
    """LoRA whose update is multiplied by a fixed ``scale`` besides ``alpha / r``."""

    method = "scaled_lora"
    scale: float = 2.0


class ScaledLora(Lora):
    def update_for(self, linear, config: ScaledLoraConfig) -> LoraUpdate:
        update = LoraUpdate(linear.in_features, linear.out_features, config.r, config.alpha, config.dropout)
        update.scaling *= config.scale
        return update


@pytest.fixture
def scaled_lora():
    """The throwaway method, registered after every module of the package was imported, and
    removed again afterwards."""
    import adapterlib.cli  # noqa: F401
    import adapterlib.compare  # noqa: F401
    import adapterlib.train  # noqa: F401

    method = register(
        ScaledLora(
            name="scaled_lora",
            label="scaled LoRA",
            config_class=ScaledLoraConfig,
            size=Size("r", "r", grid=(4,)),
            learning_rate=1e-3,
            examples=({"r": 2}, {"r": 4, "scale": 0.5, "target_modules": ("query", "dense")}),
            marker="<",
        )
    )
    yield method
    unregister(method.name)


def test_a_method_registered_late_keeps_the_whole_contract(scaled_lora, batch, tmp_path):
    for example in range(len(scaled_lora.examples)):
        for check in CONTRACT:
            run_check(check, scaled_lora, example, batch, tmp_path / f"{check.__name__}-{example}")
    # the scale is really applied: twice the update of plain LoRA with the same A and B
    torch.manual_seed(0)
    scaled = perturbed(get_peft_model(tiny_classifier(), classifier_config(ScaledLoraConfig(r=2))))
    update = next(m for m in scaled.modules() if isinstance(m, LoraUpdate))
    assert update.scaling == 2 * 16.0 / 2


def test_tables_of_methods_see_a_method_registered_late(scaled_lora):
    from adapterlib.cli import build_parser, grid_sizes
    from adapterlib.compare import MARKERS, METHOD_LABELS
    from adapterlib.train import DEFAULT_LEARNING_RATES, Recipe

    assert DEFAULT_LEARNING_RATES["scaled_lora"] == 1e-3 and METHOD_LABELS["scaled_lora"] == "scaled LoRA"
    assert MARKERS["scaled_lora"] == "<" and grid_sizes()["scaled_lora"] == [{"r": 4}]
    assert Recipe("scaled_lora").learning_rate == 1e-3
    args = build_parser().parse_args(["count", "--method", "scaled_lora", "--r", "2"])
    assert args.method == "scaled_lora"


@pytest.mark.slow
def test_a_method_registered_late_trains_and_predicts_from_the_command_line(
    scaled_lora, tiny_model_dir, tiny_data_dir, tmp_path, capsys
):
    from adapterlib.cli import main

    out = tmp_path / "run"
    argv = tiny_train_argv("scaled_lora", tiny_model_dir, tiny_data_dir, out, "--r", "2", train_size=32)
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "scaled_lora" and metrics["peft_config"]["scale"] == 2.0
    layers, targets, r, d = 2, 2, 2, 32  # LoRA on query and value of the tiny BERT, then the 2-class head
    assert metrics["trainable_parameters"] == layers * targets * r * (d + d) + d * 2 + 2
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), "good film", "bad plot"]) == 0
    assert set(capsys.readouterr().out.split()) <= {"positive", "negative"}
