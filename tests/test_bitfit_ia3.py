"""BitFit and (IA)³: against peft and an unfrozen bias, closed-form counts, merging, checkpoints,
several adapters on one base, the command line and mistakes."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig

from adapterlib import LoraConfig, PeftModel, PrefixTuningConfig, TaskType, count_parameters, get_peft_model
from adapterlib.cli import main
from adapterlib.counting import bert_parameter_count, expected_trainable_parameters, method_parameter_count
from adapterlib.methods import get_method
from adapterlib.methods.bitfit import BIAS_TERMS, BitFitConfig, BitFitSite
from adapterlib.methods.ia3 import IA3Config, IA3Linear
from adapterlib.sites import AdapterSite
from adapterlib.toy import TransformerLayer
from conftest import (
    assert_unchanged,
    refused_unchanged,
    snapshot,
    tiny_classifier,
    tiny_config,
    tiny_encoder,
    tiny_train_argv,
)
from conftest import perturbed as move

peft = pytest.importorskip("peft", reason="peft is the reference implementation; install requirements.txt")

CONFIGS = {
    "bitfit": lambda: BitFitConfig(task_type=TaskType.SEQ_CLS),
    "bitfit-small": lambda: BitFitConfig(
        bias_terms=("attention.self.query", "intermediate.dense"), task_type=TaskType.SEQ_CLS
    ),
    "ia3": lambda: IA3Config(task_type=TaskType.SEQ_CLS),
}
METHODS = ["bitfit", "ia3"]


def perturbed(peft_model: PeftModel, seed: int = 0) -> PeftModel:
    """Stand-in for training: the deltas move from 0 and the vectors from 1."""
    return move(peft_model, seed, scale=0.3)


def last_hidden(model, batch) -> torch.Tensor:
    return model(**batch, output_hidden_states=True).hidden_states[-1]


def base_tensors(model) -> dict[str, torch.Tensor]:
    """The base model's own tensors by name, wherever sites put them."""
    return {
        n.replace(".base_layer", ""): t.clone()
        for n, t in model.state_dict().items()
        if ".adapters." not in n
    }


# ------------------------------------------------------------------ (IA)^3 against peft


def peft_ia3(num_layers: int = 2):
    """peft's IA3 on the same layers: explicit full names, since "output.dense" as a suffix would
    also match attention.output.dense."""
    names = [
        f"bert.encoder.layer.{i}.{n}"
        for i in range(num_layers)
        for n in ("attention.self.key", "attention.self.value", "output.dense")
    ]
    config = peft.IA3Config(
        target_modules=names,
        feedforward_modules=[n for n in names if n.endswith(".output.dense")],
        task_type=peft.TaskType.SEQ_CLS,
    )
    return peft.get_peft_model(tiny_classifier(), config).eval()


def test_ia3_matches_peft_with_the_same_vectors_also_merged(batch):
    ours = get_peft_model(tiny_classifier(), CONFIGS["ia3"]())
    reference = peft_ia3()
    ours_sites = {
        n.removeprefix("base_model."): m for n, m in ours.named_modules() if isinstance(m, IA3Linear)
    }
    their_sites = {
        n.removeprefix("base_model.model."): m for n, m in reference.named_modules() if hasattr(m, "ia3_l")
    }
    assert (
        sorted(ours_sites)
        == sorted(their_sites)
        == sorted(
            f"bert.encoder.layer.{i}.{n}"
            for i in range(2)
            for n in ("attention.self.key", "attention.self.value", "output.dense")
        )
    )
    torch.manual_seed(3)
    with torch.no_grad():
        for name, site in ours_sites.items():
            site.active.l.normal_(1.0, 0.5)
            their_sites[name].ia3_l["default"].copy_(
                site.active.l.view_as(their_sites[name].ia3_l["default"])
            )
        reference.base_model.model.classifier.modules_to_save["default"].load_state_dict(
            ours.base_model.classifier.active.state_dict()
        )
    base = last_hidden(tiny_classifier(), batch)
    assert (last_hidden(ours, batch) - base).abs().max() > 1e-2, "the vectors must change the model"
    difference = lambda: max(
        (ours(**batch).logits - reference(**batch).logits).abs().max().item(),
        (last_hidden(ours, batch) - last_hidden(reference, batch)).abs().max().item(),
    )
    unmerged = difference()
    ours.merge_adapter()
    reference.merge_adapter()
    merged = difference()
    assert unmerged <= 1e-6 and merged <= 1e-6, (unmerged, merged)


def test_ia3_trainable_count_matches_peft():
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert count(get_peft_model(tiny_classifier(), CONFIGS["ia3"]())) == count(peft_ia3())


def test_ia3_rescales_the_ffn_activation_not_the_attention_output():
    peft_model = get_peft_model(tiny_encoder(), IA3Config())
    layer = peft_model.base_model.encoder.layer[0]
    assert isinstance(layer.output.dense, IA3Linear) and layer.output.dense.active.scales_input
    assert (
        isinstance(layer.output.dense.active.l, torch.nn.Parameter)
        and layer.output.dense.active.l.numel() == 64
    )
    assert isinstance(layer.attention.output.dense, torch.nn.Linear)
    assert not layer.attention.self.key.active.scales_input and isinstance(
        layer.attention.self.query, torch.nn.Linear
    )


# ------------------------------------------------------------------ BitFit against an unfrozen bias


def with_random_biases(model):
    """Non-zero biases (BERT starts them at 0), so that a step from b differs from a step from 0."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(".bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model


def one_step(model, parameters, optimizer: str, batch, weight_decay: float = 0.0) -> None:
    model.zero_grad()
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    if optimizer == "sgd":
        torch.optim.SGD(
            parameters, lr=20.0, weight_decay=weight_decay
        ).step()  # a visible step on a tiny random model
    else:
        torch.optim.AdamW(parameters, lr=0.1, weight_decay=weight_decay).step()


def bitfit_step_and_unfrozen_step(optimizer: str, batch, weight_decay: float = 0.0):
    """The biases (b + delta) after one step of BitFit, and b after one step with only the biases unfrozen."""
    bitfit = get_peft_model(with_random_biases(tiny_classifier()), CONFIGS["bitfit"]())
    one_step(bitfit, [p for p in bitfit.parameters() if p.requires_grad], optimizer, batch, weight_decay)
    plain = with_random_biases(tiny_classifier())
    plain.requires_grad_(False)
    unfrozen = [
        plain.bert.encoder.get_submodule(f"layer.{i}.{name}").bias for i in range(2) for name in BIAS_TERMS
    ]
    unfrozen += list(plain.classifier.parameters())
    for parameter in unfrozen:
        parameter.requires_grad_(True)
    one_step(plain, unfrozen, optimizer, batch, weight_decay)
    with torch.no_grad():
        moved = {site: site.base_layer.bias + site.active.delta for site in bitfit.sites(BitFitSite)}
    deltas = torch.cat([site.active.delta.detach() for site in moved])
    assert len(moved) == 2 * len(BIAS_TERMS) and deltas.abs().max() > 1e-2
    return torch.cat(list(moved.values())), torch.cat([p.detach() for p in unfrozen[:-2]]), bitfit, plain


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_bitfit_step_equals_a_step_on_the_unfrozen_biases(optimizer, batch):
    bitfit_biases, unfrozen_biases, bitfit, plain = bitfit_step_and_unfrozen_step(optimizer, batch)
    torch.testing.assert_close(bitfit_biases, unfrozen_biases, rtol=0, atol=1e-6)
    torch.testing.assert_close(bitfit(**batch).logits, plain(**batch).logits, rtol=1e-6, atol=1e-6)


def test_with_weight_decay_bitfit_steps_differ_from_the_unfrozen_biases(batch):
    """Decay pulls delta to 0 (the bias to its pre-trained value), not b to 0: the docstring's caveat."""
    bitfit_biases, unfrozen_biases, _, _ = bitfit_step_and_unfrozen_step("adamw", batch, weight_decay=0.5)
    assert (bitfit_biases - unfrozen_biases).abs().max() > 1e-3


# ------------------------------------------------------------------ both methods on the machinery


@pytest.mark.parametrize("name", list(CONFIGS))
def test_closed_form_counts_equal_built_models(name):
    config = CONFIGS[name]()
    for overrides in ({}, {"intermediate_size": 48, "num_hidden_layers": 3}):
        model_config = tiny_config(num_labels=3, **overrides)
        model = tiny_classifier(num_labels=3, **overrides)
        inserted = method_parameter_count(model_config, config)
        trainable, total, _ = count_parameters(get_peft_model(model, config))
        assert (
            trainable
            == expected_trainable_parameters(model_config, config, num_labels=3)
            == inserted + 32 * 3 + 3
        )
        assert total == bert_parameter_count(model_config, num_labels=3) + inserted + 32 * 3 + 3
    layer = TransformerLayer(d_model=64, num_heads=4, d_ff=80)
    toy_config = BitFitConfig(bias_terms=config.bias_terms) if name.startswith("bitfit") else IA3Config()
    assert count_parameters(get_peft_model(layer, toy_config)).trainable == method_parameter_count(
        layer.config, toy_config
    )


def test_closed_forms_on_bert_base_and_minilm():
    bert_base, minilm = BertConfig(), BertConfig(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)
    assert method_parameter_count(bert_base, BitFitConfig()) == 12 * (7 * 768 + 3072) == 101_376
    assert method_parameter_count(bert_base, IA3Config()) == 12 * (2 * 768 + 3072) == 55_296
    assert method_parameter_count(minilm, BitFitConfig()) == 25_344
    assert method_parameter_count(minilm, IA3Config()) == 13_824
    assert method_parameter_count(minilm, CONFIGS["bitfit-small"]()) == 6 * (384 + 1536)


@pytest.mark.parametrize("name", METHODS)
def test_only_the_method_and_the_head_receive_gradients(name, batch):
    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS[name]()))
    peft_model.train()
    peft_model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in peft_model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad == trainable
    assert all("adapters.default" in n for n in trainable)
    assert any(n.endswith(".delta" if name == "bitfit" else ".l") for n in trainable)


@pytest.mark.parametrize("name", METHODS)
def test_merge_matches_and_unmerge_restores_the_base_bit_for_bit(name, batch):
    peft_model = perturbed(get_peft_model(tiny_classifier(), CONFIGS[name]()))
    before = base_tensors(peft_model.base_model)
    unmerged = peft_model(**batch).logits
    peft_model.merge_adapter()
    changed = [k for k, v in base_tensors(peft_model.base_model).items() if not torch.equal(v, before[k])]
    assert changed and all(k.endswith(".bias") for k in changed) == (name == "bitfit")
    torch.testing.assert_close(peft_model(**batch).logits, unmerged, rtol=0, atol=1e-6)
    with pytest.raises(RuntimeError, match="call unmerge_adapter\\(\\) before merging again"):
        peft_model.merge_adapter()
    with pytest.raises(RuntimeError, match="is merged into the weights"):
        peft_model.set_adapter("default")
    peft_model.unmerge_adapter()
    after = base_tensors(peft_model.base_model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(peft_model(**batch).logits, unmerged)
    plain = peft_model.merge_and_unload()
    assert type(plain).__name__ == "BertForSequenceClassification"
    assert not any(isinstance(m, AdapterSite) for m in plain.modules())
    torch.testing.assert_close(plain(**batch).logits, unmerged, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_save_pretrained_and_from_pretrained_round_trip(name, batch, tmp_path):
    trained = perturbed(get_peft_model(tiny_classifier(), CONFIGS[name]()))
    expected = trained(**batch).logits
    trained.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    site_names = (
        BIAS_TERMS if name == "bitfit" else ("attention.self.key", "attention.self.value", "output.dense")
    )
    tensor = "delta" if name == "bitfit" else "l"
    assert set(saved) == {f"layers.{i}.{s}.{tensor}" for i in range(2) for s in site_names} | {
        "classifier.weight",
        "classifier.bias",
    }
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_config"]["method"] == name
    loaded = PeftModel.from_pretrained(tiny_classifier(), tmp_path)
    assert torch.equal(loaded(**batch).logits, expected)
    assert loaded.peft_config["default"] == CONFIGS[name]()
    assert not any(p.requires_grad for p in loaded.parameters())


def test_several_adapters_on_one_base_switch_disable_delete_and_unload(batch, tmp_path):
    """Prefix tuning first (it wraps attention.self), then BitFit, (IA)³ and LoRA on the same Linears."""
    model = tiny_classifier()
    base_logits = model(**batch).logits
    base = base_tensors(model)
    peft_model = perturbed(
        get_peft_model(
            model, PrefixTuningConfig(num_virtual_tokens=2, task_type=TaskType.SEQ_CLS), adapter_name="prefix"
        ),
        seed=1,
    )
    logits = {"prefix": peft_model(**batch).logits}
    for seed, (adapter, config) in enumerate(
        [
            ("bias", CONFIGS["bitfit"]()),
            ("scale", CONFIGS["ia3"]()),
            ("lora", LoraConfig(r=2, target_modules=("key", "value", "dense"), task_type=TaskType.SEQ_CLS)),
        ],
        start=2,
    ):
        peft_model.add_adapter(adapter, config)
        logits[adapter] = perturbed(peft_model, seed)(**batch).logits
    assert len({tuple(v.flatten().tolist()) for v in logits.values()}) == 4
    key = peft_model.base_model.bert.encoder.layer[0].attention.self.base_layer.key
    assert isinstance(key, IA3Linear) and isinstance(key.base_layer, BitFitSite)
    for adapter in ["bias", "prefix", "scale", "lora", "bias"]:
        peft_model.set_adapter(adapter)
        assert torch.equal(peft_model(**batch).logits, logits[adapter]), adapter
    with peft_model.disable_adapter():
        assert torch.equal(peft_model(**batch).logits, base_logits)
    peft_model.set_adapter("scale")
    peft_model.merge_adapter()
    torch.testing.assert_close(peft_model(**batch).logits, logits["scale"], rtol=0, atol=1e-6)
    peft_model.unmerge_adapter()
    peft_model.save_pretrained(tmp_path, selected_adapters=["bias"])
    peft_model.delete_adapter("bias")
    peft_model.load_adapter(tmp_path / "bias", "bias_again")
    peft_model.set_adapter("bias_again")
    assert torch.equal(peft_model(**batch).logits, logits["bias"])
    plain = peft_model.unload()
    assert not any(isinstance(m, AdapterSite) for m in plain.modules())
    after = base_tensors(plain)
    assert all(torch.equal(after[k], base[k]) for k in base) and after.keys() == base.keys()
    assert torch.equal(plain(**batch).logits, base_logits)


# ------------------------------------------------------------------ command line


def test_count_ia3_and_bitfit_on_the_packaged_model(capsys):
    # MiniLM-L6: d = 384, i = 1536, 6 layers; the head's trainable copy 384 * 2 + 2 = 770.
    assert main(["count", "--method", "ia3", "--pooling", "cls"]) == 0
    assert (
        capsys.readouterr().out.strip() == "trainable 14,594 | total 22,728,580 | fraction 0.0642%"
    )  # 6 (2d + i) + 770
    assert main(["count", "--method", "bitfit", "--pooling", "cls"]) == 0
    assert (
        capsys.readouterr().out.strip() == "trainable 26,114 | total 22,740,100 | fraction 0.1148%"
    )  # 6 (7d + i) + 770
    assert main(["count", "--method", "ia3", "--r", "8"]) == 2
    assert "--r does not apply to --method ia3" in capsys.readouterr().err


def test_train_bitfit_on_the_command_line(tiny_model_dir, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(tiny_train_argv("bitfit", tiny_model_dir, tiny_data_dir, out)) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("bitfit: validation accuracy")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (
        metrics["trainable_parameters"] == 2 * (7 * 32 + 64) + 32 * 2 + 2
    )  # 2 layers of 7d + i, mean-pooling head
    assert (
        metrics["recipe"]["learning_rate"] == get_method("bitfit").learning_rate
        and metrics["recipe"]["weight_decay"] == 0.0
    )
    deltas = [t for k, t in load_file(out / "adapter_model.safetensors").items() if k.endswith(".delta")]
    assert len(deltas) == 2 * len(BIAS_TERMS) and all(t.abs().max() > 0 for t in deltas)
    assert main(["predict", "--checkpoint", str(out), "good film", "bad plot"]) == 0


# ------------------------------------------------------------------ mistakes


@pytest.mark.parametrize(
    "make, error, message",
    [
        (
            lambda: BitFitConfig(bias_terms=("query",)),
            ValueError,
            "not biases of a BERT layer; use full names",
        ),
        (lambda: BitFitConfig(bias_terms=()), ValueError, "bias_terms is empty"),
        (
            lambda: BitFitConfig(bias_terms=("output.dense", "output.dense")),
            ValueError,
            "names a module twice",
        ),
        (lambda: BitFitConfig(bias_terms=[3]), TypeError, "bias_terms must be module names"),
        (
            lambda: IA3Config(task_type="classification"),
            ValueError,
            "task_type 'classification' is not known",
        ),
    ],
)
def test_bad_configs_are_refused_when_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_a_config_changed_after_making_it_is_refused_and_the_model_is_unchanged():
    model = tiny_classifier()
    before = snapshot(model)
    config = BitFitConfig(task_type=TaskType.SEQ_CLS)
    config.bias_terms = ("attention.output.layernorm",)
    with pytest.raises(ValueError, match="not biases of a BERT layer"):
        get_peft_model(model, config)
    assert_unchanged(model, before)


def test_a_module_without_bias_is_refused_and_the_model_is_unchanged():
    model = tiny_classifier()
    model.bert.encoder.layer[1].output.LayerNorm = torch.nn.LayerNorm(32, bias=False)
    with refused_unchanged(model, ValueError, "output.LayerNorm \\(LayerNorm\\) has no bias to train"):
        get_peft_model(model, CONFIGS["bitfit"]())
    get_peft_model(model, BitFitConfig(bias_terms=("attention.self.query",)))  # the other biases are fine


def test_ia3_on_a_layer_without_linear_projections_is_refused_and_the_peft_model_is_unchanged():
    model = tiny_classifier()
    model.bert.encoder.layer[1].output.dense = torch.nn.Sequential(torch.nn.Linear(64, 32))
    peft_model = perturbed(get_peft_model(model, CONFIGS["bitfit-small"]()))
    with refused_unchanged(peft_model, TypeError, "output.dense is a Sequential"):
        peft_model.add_adapter("scale", CONFIGS["ia3"]())
    assert peft_model.active_adapter == "default" and list(peft_model.peft_config) == ["default"]
    with pytest.raises(ValueError, match="needs a model with a `classifier` head"):
        get_peft_model(tiny_encoder(), CONFIGS["ia3"]())
