"""He et al.'s unified view on the tiny BERT: each method's measured Delta h equals its row's formula."""

import pytest
import torch

from adapterlib import AdapterConfig, LoraConfig, PrefixTuningConfig, get_peft_model, unified
from adapterlib.attention import split_heads
from adapterlib.methods.bitfit import BitFitConfig
from adapterlib.methods.dora import DoraConfig
from adapterlib.methods.ia3 import IA3Config
from adapterlib.methods.parallel import ParallelAdapterConfig
from conftest import tiny_encoder


def adapted(config, perturbed: bool = True):
    model = get_peft_model(tiny_encoder(), config)
    return unified.perturb(model) if perturbed else model


def layer(model, index: int = 0):
    return model.base_model.encoder.layer[index]


def lora_row(model, site, call):
    update = site.active
    return unified.lora_delta(call.args[0], update.A, update.B, update.scaling)


def dora_row(model, site, call):
    update = site.active
    return unified.dora_delta(
        call.args[0], site.base_layer.weight, update.A, update.B, update.magnitude, update.scaling
    )


def adapter_row(model, site, call):
    adapter = site.active
    h = site.base_layer(call.args[0])  # the LayerNorm's output: what the sequential adapter reads
    return unified.bottleneck_delta(
        h, adapter.down.weight, adapter.down.bias, adapter.up.weight, adapter.up.bias, adapter.scaling
    )


def parallel_row(model, site, call):
    adapter = site.active
    x = call.args[1]  # the FFN's input, the block's residual input
    return unified.bottleneck_delta(
        x, adapter.down.weight, adapter.down.bias, adapter.up.weight, adapter.up.bias, adapter.scaling
    )


def ia3_output_row(model, site, call):
    return unified.ia3_delta(site.base_layer(call.args[0]), site.active.l)


def ia3_input_row(model, site, call):
    return unified.ia3_delta(call.args[0], site.active.l)


def bitfit_row(model, site, call):
    return unified.bitfit_delta(site.active.delta).expand(*call.args[0].shape[:-1], -1)


def prefix_row(model, site, call, mask):
    parts = unified.prefix_parts(site, call.args[0])
    return unified.merge_heads(unified.prefix_delta(**parts, attention_mask=mask))


# name: (config, the site in layer 0, where the hidden state is read (None: the site's output), the row's formula)
ROWS = {
    "adapter": (AdapterConfig(r=4), "output.LayerNorm", None, adapter_row),
    "adapter-houlsby": (
        AdapterConfig(r=4, placement="houlsby"),
        "attention.output.LayerNorm",
        None,
        adapter_row,
    ),
    "lora-query": (LoraConfig(r=4, alpha=8, dropout=0.0), "attention.self.query", None, lora_row),
    "lora-value": (LoraConfig(r=4, alpha=8, dropout=0.0), "attention.self.value", None, lora_row),
    "parallel": (ParallelAdapterConfig(r=4), "output", "base_layer.LayerNorm", parallel_row),
    "ia3-key": (IA3Config(), "attention.self.key", None, ia3_output_row),
    "ia3-value": (IA3Config(), "attention.self.value", None, ia3_output_row),
    "ia3-ffn": (IA3Config(), "output.dense", "base_layer", ia3_input_row),
    "bitfit-query": (BitFitConfig(), "attention.self.query", None, bitfit_row),
    "bitfit-layernorm": (BitFitConfig(), "output.LayerNorm", None, bitfit_row),
    "dora-query": (DoraConfig(r=4, alpha=8, dropout=0.0), "attention.self.query", None, dora_row),
}


def measure(name, batch, perturbed=True, layer_index=0):
    config, path, at, formula = ROWS[name]
    model = adapted(config, perturbed)
    site = layer(model, layer_index).get_submodule(path)
    call = unified.record_call(model, site, **batch)
    inner = None if at is None else site.get_submodule(at)
    return model, site, call, unified.measured_delta_h(model, site, call, inner), formula


@pytest.mark.parametrize("layer_index", [0, 1])
@pytest.mark.parametrize("name", list(ROWS))
def test_measured_delta_h_equals_the_rows_formula(name, layer_index, batch):
    model, site, call, measured, formula = measure(name, batch, layer_index=layer_index)
    assert measured.abs().max() > 0.05, "a formula checked against a zero change proves nothing"
    torch.testing.assert_close(measured, formula(model, site, call))


@pytest.mark.parametrize("name", list(ROWS))
def test_a_wrong_scaling_or_input_is_caught(name, batch):
    """The comparison is sharp: the same formula with its tensors changed by 10% fails."""
    model, site, call, measured, formula = measure(name, batch)
    with torch.no_grad():
        for parameter in site.active.parameters():
            parameter.mul_(1.1)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(measured, formula(model, site, call))


@pytest.mark.parametrize("name", list(ROWS))
def test_every_row_starts_at_zero(name, batch):
    measured = measure(name, batch, perturbed=False)[3]
    assert measured.abs().max() <= 1e-6


@pytest.mark.parametrize("layer_index", [0, 1])
def test_prefix_attention_is_a_gated_mix_per_head(layer_index, batch):
    model = adapted(PrefixTuningConfig(num_virtual_tokens=4, init_std=0.5))
    site = layer(model, layer_index).attention.self
    call = unified.record_call(model, site, **batch)
    parts = unified.prefix_parts(site, call.args[0])
    mask = batch["attention_mask"]
    gate = unified.prefix_gate(parts["query"], parts["key"], parts["prefix_key"], mask)
    assert 0.05 < gate.min() and gate.max() < 0.95, (
        "both parts must take part for the identity to say something"
    )
    mix = (1 - gate) * unified.attention(
        parts["query"], parts["key"], parts["value"], mask
    ) + gate * unified.attention(parts["query"], parts["prefix_key"], parts["prefix_value"])
    with_prefix = split_heads(unified.hidden_state(site, call), parts["query"].shape[1])
    one_softmax = unified.attention_with_prefix(**parts, attention_mask=mask)
    for head in range(with_prefix.shape[1]):
        torch.testing.assert_close(mix[:, head], with_prefix[:, head])
        torch.testing.assert_close(one_softmax[:, head], with_prefix[:, head])
    plain = unified.attention(parts["query"], parts["key"], parts["value"], mask)
    torch.testing.assert_close(plain + unified.prefix_delta(**parts, attention_mask=mask), one_softmax)
    measured = unified.measured_delta_h(model, site, call)
    torch.testing.assert_close(measured, prefix_row(model, site, call, mask))


def test_prefix_gate_with_equal_scores_counts_the_real_tokens(batch):
    query = torch.zeros(2, 4, 6, 8)
    gate = unified.prefix_gate(query, torch.randn(2, 4, 6, 8), torch.randn(4, 5, 8), batch["attention_mask"])
    torch.testing.assert_close(gate[0], torch.full((4, 6, 1), 5 / 11))
    torch.testing.assert_close(
        gate[1], torch.full((4, 6, 1), 5 / 8)
    )  # 3 real tokens: padding takes no attention


def test_prefix_gate_stays_finite_for_large_scores(batch):
    gate = unified.prefix_gate(
        torch.full((2, 1, 6, 4), 100.0),
        torch.randn(2, 1, 6, 4) * 100,
        torch.randn(1, 3, 4) * 100,
        batch["attention_mask"],
    )
    assert torch.isfinite(gate).all()


@pytest.mark.parametrize(
    "name", ["adapter", "lora-query", "parallel", "ia3-key", "ia3-ffn", "bitfit-query", "dora-query"]
)
def test_only_bitfit_adds_the_same_change_to_every_token(name, batch):
    measured = measure(name, batch)[3]
    real = measured[batch["attention_mask"].bool()]  # [real tokens, features]
    spread = (real - real[0]).abs().max().item()
    assert (spread <= 1e-6) == name.startswith("bitfit"), spread


def test_dora_is_not_linear_in_B_where_lora_is(batch):
    model, site, call, _, _ = measure("dora-query", batch)
    update, x, weight = site.active, call.args[0], site.base_layer.weight
    once = unified.dora_delta(x, weight, update.A, update.B, update.magnitude, update.scaling)
    twice = unified.dora_delta(x, weight, update.A, 2 * update.B, update.magnitude, update.scaling)
    assert (twice - 2 * once).abs().max() > 0.1 * once.abs().max()
    torch.testing.assert_close(
        unified.lora_delta(x, update.A, 2 * update.B, 2.0), 2 * unified.lora_delta(x, update.A, update.B, 2.0)
    )


def test_dora_decomposes_into_a_rescaling_and_a_rescaled_lora_term(batch):
    model, site, call, measured, _ = measure("dora-query", batch)
    update, x, weight = site.active, call.args[0], site.base_layer.weight
    gain = update.magnitude / torch.linalg.vector_norm(weight + update.scaling * update.B @ update.A, dim=1)
    with torch.no_grad():
        decomposed = unified.ia3_delta(x @ weight.T, gain) + gain * unified.lora_delta(
            x, update.A, update.B, update.scaling
        )
    torch.testing.assert_close(measured, decomposed)


def test_record_call_names_a_site_that_never_ran(batch):
    model = adapted(LoraConfig(r=4))
    stranger = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="never called"):
        unified.record_call(model, stranger, **batch)
