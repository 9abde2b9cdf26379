"""DoRA against peft's (LoraConfig(use_dora=True)), and the parallel adapter against its formula:
start at the base, closed-form counts, merging, checkpoints, the command line, refused configs."""

import pytest
import torch

from adapterlib import AdapterConfig, LoraConfig, PeftModel, TaskType, count_parameters, get_peft_model
from adapterlib.cli import main
from adapterlib.counting import method_parameter_count
from adapterlib.methods import get_method
from adapterlib.methods.dora import DoraConfig, DoraUpdate, row_norms
from adapterlib.methods.lora import LoraLinear
from adapterlib.methods.parallel import ParallelAdapterConfig, ParallelAdapterSite
from conftest import perturbed, refused_unchanged, tiny_classifier, tiny_train_argv

peft = pytest.importorskip("peft", reason="peft is the reference implementation; install requirements.txt")

SEQ_CLS = TaskType.SEQ_CLS
ALL_LINEARS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
LABELS = torch.tensor([0, 1])


def dora_sites(model: torch.nn.Module, prefix: str) -> dict[str, torch.nn.Module]:
    return {n.removeprefix(prefix): m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def dora_and_peft(targets: tuple[str, ...], dropout: float = 0.0):
    """Our DoRA with non-trivial A, B and m, and peft's DoRA given the same tensors and head."""
    ours = get_peft_model(
        tiny_classifier(),
        DoraConfig(r=4, alpha=8, dropout=dropout, target_modules=targets, task_type=SEQ_CLS),
    )
    perturbed(ours)
    reference = peft.get_peft_model(
        tiny_classifier(),
        peft.LoraConfig(
            r=4,
            lora_alpha=8,
            lora_dropout=dropout,
            use_dora=True,
            target_modules=list(targets),
            task_type=peft.TaskType.SEQ_CLS,
        ),
    )
    ours_sites, their_sites = (
        dora_sites(ours, "base_model."),
        {
            n.removeprefix("base_model.model."): m
            for n, m in reference.named_modules()
            if hasattr(m, "lora_magnitude_vector")
        },
    )
    assert ours_sites.keys() == their_sites.keys() and ours_sites
    with torch.no_grad():
        for name, site in ours_sites.items():
            update = site.adapters["default"]
            their_sites[name].lora_A["default"].weight.copy_(update.A)
            their_sites[name].lora_B["default"].weight.copy_(update.B)
            their_sites[name].lora_magnitude_vector["default"].weight.copy_(update.magnitude)
        reference.base_model.model.classifier.modules_to_save["default"].load_state_dict(
            ours.base_model.classifier.active.state_dict()
        )
    return ours, reference, ours_sites, their_sites


# ------------------------------------------------------------------ DoRA against peft


@pytest.mark.parametrize("targets", [("query", "value"), ALL_LINEARS], ids=["query-value", "all-linears"])
def test_dora_matches_peft_in_outputs_gradients_and_merged(targets, batch):
    ours, reference, ours_sites, their_sites = dora_and_peft(targets)
    ours.eval()
    reference.eval()
    torch.testing.assert_close(ours(**batch).logits, reference(**batch).logits, rtol=0, atol=1e-6)
    # the magnitude is not where it started, and not the norm of the current direction either
    update = ours_sites["bert.encoder.layer.0.attention.self.query"].adapters["default"]
    assert (update.magnitude - update.direction_norms()).abs().min() > 1e-4

    ours(**batch, labels=LABELS).loss.backward()
    reference(**batch, labels=LABELS).loss.backward()
    for name, site in ours_sites.items():
        mine, theirs = site.adapters["default"], their_sites[name]
        for tensor, their_tensor in [
            (mine.A, theirs.lora_A["default"].weight),
            (mine.B, theirs.lora_B["default"].weight),
            (mine.magnitude, theirs.lora_magnitude_vector["default"].weight),
        ]:
            assert tensor.grad.abs().max() > 0
            torch.testing.assert_close(tensor.grad, their_tensor.grad, rtol=1e-5, atol=1e-8, msg=name)

    with torch.no_grad():
        unmerged = ours(**batch).logits
        merged, their_merged = ours.merge_and_unload(), reference.merge_and_unload()
        assert not any(isinstance(m, LoraLinear) for m in merged.modules())
        torch.testing.assert_close(merged(**batch).logits, their_merged(**batch).logits, rtol=0, atol=1e-6)
        torch.testing.assert_close(merged(**batch).logits, unmerged, rtol=0, atol=1e-5)


def test_dora_dropout_enters_as_in_peft(batch):
    """In training, the update reads dropout(x) in both of its terms while W x + b reads x."""
    ours, reference, _, _ = dora_and_peft(("query", "value", "output.dense"), dropout=0.3)
    ours.train()
    reference.train()
    outputs = []
    for model in (ours, reference):
        torch.manual_seed(7)
        outputs.append(model(**batch).logits)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=1e-6)
    torch.manual_seed(8)
    assert (ours(**batch).logits - outputs[0]).abs().max() > 1e-4  # dropout did act


def test_dora_trainable_count_matches_peft():
    ours = get_peft_model(tiny_classifier(), DoraConfig(r=4, target_modules=ALL_LINEARS, task_type=SEQ_CLS))
    reference = peft.get_peft_model(
        tiny_classifier(),
        peft.LoraConfig(
            r=4, use_dora=True, target_modules=list(ALL_LINEARS), task_type=peft.TaskType.SEQ_CLS
        ),
    )
    assert count_parameters(ours).trainable == sum(
        p.numel() for p in reference.parameters() if p.requires_grad
    )


def test_dora_magnitude_starts_at_the_row_norms_and_merging_gives_the_decomposed_weight(batch):
    peft_model = get_peft_model(tiny_classifier(), DoraConfig(r=4, dropout=0.0, task_type=SEQ_CLS))
    query = peft_model.base_model.bert.encoder.layer[0].attention.self.query
    update, weight = query.adapters["default"], query.base_layer.weight
    assert torch.equal(update.magnitude, weight.norm(dim=1))
    original = weight.clone()
    perturbed(peft_model)
    unmerged = peft_model(**batch).logits
    direction = original + update.scaling * update.B @ update.A
    expected = update.magnitude[:, None] * direction / direction.norm(dim=1, keepdim=True)
    peft_model.merge_adapter()
    torch.testing.assert_close(weight, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        row_norms(weight), update.magnitude.abs(), rtol=0, atol=1e-6
    )  # the lengths are |m|
    torch.testing.assert_close(peft_model(**batch).logits, unmerged, rtol=0, atol=1e-5)
    peft_model.unmerge_adapter()
    assert torch.equal(weight, original)
    assert torch.equal(peft_model(**batch).logits, unmerged)


def test_dora_and_lora_share_a_site_and_switch(batch):
    base = tiny_classifier()
    expected = base(**batch).logits
    peft_model = perturbed(get_peft_model(base, DoraConfig(target_modules=("query",), task_type=SEQ_CLS)))
    dora = peft_model(**batch).logits
    peft_model.add_adapter("lora", LoraConfig(target_modules=("query", "value"), task_type=SEQ_CLS))
    query = peft_model.base_model.bert.encoder.layer[0].attention.self.query
    assert isinstance(query, LoraLinear) and list(query.adapters) == ["default", "lora"]
    assert isinstance(query.adapters["default"], DoraUpdate) and not isinstance(
        query.adapters["lora"], DoraUpdate
    )
    perturbed(peft_model, seed=1)
    assert (peft_model(**batch).logits - dora).abs().max() > 1e-4
    peft_model.set_adapter("default")
    assert torch.equal(peft_model(**batch).logits, dora)
    with peft_model.disable_adapter():
        assert torch.equal(peft_model(**batch).logits, expected)


# ------------------------------------------------------------------ the parallel adapter


def test_parallel_adapter_adds_its_output_to_the_ffn_before_the_residual_and_layer_norm(batch):
    peft_model = perturbed(get_peft_model(tiny_classifier(), ParallelAdapterConfig(r=4, task_type=SEQ_CLS)))
    layer = peft_model.base_model.bert.encoder.layer[1]
    site = layer.output
    assert (
        isinstance(site, ParallelAdapterSite) and site.base_layer.dense is site.dense
    )  # the block reads through
    captured = {}
    layer.intermediate.register_forward_hook(lambda m, args, out: captured.update(x=args[0]))
    site.register_forward_hook(lambda m, args, out: captured.update(out=out))
    peft_model(**batch)
    x, block, adapter = captured["x"], site.base_layer, site.adapters["default"]
    ffn = block.dense(layer.intermediate(x))
    delta = 4.0 * (
        torch.relu(x @ adapter.down.weight.T + adapter.down.bias) @ adapter.up.weight.T + adapter.up.bias
    )
    expected = torch.nn.functional.layer_norm(
        x + ffn + delta, (32,), block.LayerNorm.weight, block.LayerNorm.bias, 1e-12
    )
    torch.testing.assert_close(captured["out"], expected, rtol=1e-5, atol=1e-5)
    assert delta.abs().max() > 1e-2


def test_parallel_and_sequential_adapters_share_a_layer(batch, tmp_path):
    """A sequential adapter added after the parallel one lands inside the block, where the block
    uses it; saved alone and loaded onto a fresh base it computes the same."""
    peft_model = get_peft_model(tiny_classifier(), ParallelAdapterConfig(r=4, task_type=SEQ_CLS))
    peft_model.add_adapter("sequential", AdapterConfig(r=4, placement="houlsby", task_type=SEQ_CLS))
    perturbed(peft_model)
    sequential = peft_model(**batch).logits
    peft_model.save_pretrained(tmp_path, selected_adapters=["sequential"])
    alone = PeftModel.from_pretrained(tiny_classifier(), tmp_path / "sequential")
    assert torch.equal(alone(**batch).logits, sequential)
    peft_model.delete_adapter("sequential")
    assert isinstance(peft_model.base_model.bert.encoder.layer[0].output, ParallelAdapterSite)
    assert not any("sequential" in n for n, _ in peft_model.named_parameters())


def test_parallel_adapter_unloads_to_the_original_modules(batch):
    base = tiny_classifier()
    expected = base(**batch).logits
    blocks = [layer.output for layer in base.bert.encoder.layer]
    peft_model = perturbed(get_peft_model(base, ParallelAdapterConfig(task_type=SEQ_CLS)))
    assert (peft_model(**batch).logits - expected).abs().max() > 1e-3
    with pytest.raises(ValueError, match="parallel adapter adds computation that cannot be folded"):
        peft_model.merge_adapter()
    unloaded = peft_model.unload()
    assert [layer.output for layer in unloaded.bert.encoder.layer] == blocks
    assert torch.equal(unloaded(**batch).logits, expected)


# ------------------------------------------------------------------ both: start, counts, checkpoints, refusals

CONFIGS = [
    DoraConfig(task_type=SEQ_CLS),
    DoraConfig(r=2, dropout=0.2, target_modules=ALL_LINEARS, task_type=SEQ_CLS),
    ParallelAdapterConfig(task_type=SEQ_CLS),
    ParallelAdapterConfig(r=3, scaling=1.0, dropout=0.1, activation="gelu", task_type=SEQ_CLS),
]
IDS = ["dora", "dora-all", "parallel", "parallel-gelu"]


def test_closed_forms_on_bert_base():
    from transformers import BertConfig

    config = BertConfig()
    assert method_parameter_count(config, DoraConfig(r=8)) == 12 * 2 * (8 * (768 + 768) + 768) == 313_344
    assert (
        method_parameter_count(config, ParallelAdapterConfig(r=16))
        == 12 * (2 * 768 * 16 + 768 + 16)
        == 304_320
    )


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: DoraConfig(r=0), ValueError, "r must be a positive integer"),
        (lambda: DoraConfig(target_modules=()), ValueError, "target_modules is empty"),
        (lambda: ParallelAdapterConfig(r=2.5), TypeError, "r must be an int"),
        (lambda: ParallelAdapterConfig(scaling=0), ValueError, "scaling must be a finite number > 0"),
        (lambda: ParallelAdapterConfig(scaling="4"), TypeError, "scaling must be a number"),
        (
            lambda: ParallelAdapterConfig(activation="tanh"),
            ValueError,
            "activation 'tanh' is not known; use one of: relu, gelu",
        ),
        (lambda: ParallelAdapterConfig(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_values_are_refused_when_the_config_is_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize(
    "config, error, message",
    [
        (
            DoraConfig(r=33),
            ValueError,
            r"r=33 is larger than the smaller side of attention.self.query \(32\)",
        ),
        (
            DoraConfig(target_modules=("uery",)),
            ValueError,
            r"target_modules \['uery'\] match no Linear layer",
        ),
        (ParallelAdapterConfig(r=33), ValueError, r"r=33 is larger than the hidden size \(32\)"),
        (peft.LoraConfig(use_dora=True), TypeError, "peft's class; adapterlib has its own"),
    ],
    ids=["dora-r", "dora-target", "parallel-r", "peft-config"],
)
def test_configs_that_do_not_fit_the_model_leave_it_unchanged(config, error, message):
    model = tiny_classifier()
    with refused_unchanged(model, error, message):
        get_peft_model(model, config)


def test_a_config_changed_after_it_was_made_is_checked_again():
    config = ParallelAdapterConfig()
    config.scaling = -1.0
    model = tiny_classifier()
    with refused_unchanged(model, ValueError, "scaling must be a finite number > 0, got -1.0"):
        get_peft_model(model, config)


def test_every_method_has_its_own_chart_marker():
    from adapterlib.compare import MARKERS

    assert len(set(MARKERS.values())) == len(MARKERS)


# ------------------------------------------------------------------ the command line


def test_count_dora_on_the_packaged_model(capsys):
    assert main(["count", "--method", "dora", "--r", "4", "--pooling", "cls"]) == 0
    # MiniLM-L6: 6 layers x (query, value) x (4 * (384 + 384) + 384), plus the 384 x 2 head
    trainable = 6 * 2 * (4 * 768 + 384) + 384 * 2 + 2
    assert trainable == 42_242
    assert capsys.readouterr().out.startswith(f"trainable {trainable:,} | total ")


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["count", "--method", "parallel", "--target-modules", "query"],
            "--target-modules does not apply to --method parallel",
        ),
        (["count", "--method", "dora", "--r", "1000"], "r=1000 is larger than the smaller side"),
        (
            ["count", "--method", "parallel", "--r", "0"],
            "argument --r: must be a positive whole number, got 0",
        ),
    ],
)
def test_count_refuses_what_does_not_fit(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_train_parallel_then_predict_through_the_command_line(
    tiny_model_dir, tiny_data_dir, tmp_path, capsys
):
    import json

    out = tmp_path / "run"
    options = "--r", "4", "--precision", "fp32"
    assert main(tiny_train_argv("parallel", tiny_model_dir, tiny_data_dir, out, *options, train_size=32)) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("parallel: validation accuracy")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == 2 * (2 * 32 * 4 + 32 + 4) + 32 * 2 + 2
    assert metrics["recipe"]["learning_rate"] == get_method("parallel").learning_rate
    assert main(["predict", "--checkpoint", str(out), "a fine film", "a dull plot"]) == 0
    assert all(line in ("positive", "negative") for line in capsys.readouterr().out.strip().splitlines())


def test_parallel_scaling_is_a_command_line_option(capsys):
    from adapterlib.cli import main

    assert main(["count", "--method", "parallel", "--r", "16", "--scaling", "2"]) == 0
    assert "trainable 76,898" in capsys.readouterr().out
    assert main(["count", "--method", "lora", "--scaling", "2"]) == 2
    assert "--scaling does not apply to --method lora" in capsys.readouterr().err
