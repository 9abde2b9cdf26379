"""NF4 and int8 from scratch (adapterlib.quantize) against bitsandbytes, and LoRA on a quantized base."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from adapterlib import LoraConfig, TaskType, get_peft_model
from adapterlib.methods.lora import LoraLinear, LoraUpdate
from adapterlib.quantize import (
    QuantizationConfig,
    QuantizedLinear,
    dequantize_blocks,
    dequantize_int8,
    dequantize_nf4,
    dynamic_8bit_levels,
    is_quantized,
    merge_and_requantize,
    normal_float_levels,
    pack_4bit,
    quantize_int8,
    quantize_model,
    quantize_nf4,
    silence_bitsandbytes,
    storage_report,
    unpack_4bit,
)
from adapterlib.train import Recipe
from conftest import assert_unchanged, perturbed, refused_unchanged, snapshot, tiny_classifier

INSTALL = "bitsandbytes is the reference implementation; pip install bitsandbytes (requirements.txt)"
# A short last block (100 x 37 = 3700 = 57 * 64 + 52) and an odd count (15) among them.
SHAPES = [(384, 384), (1536, 384), (100, 37), (3, 5)]


@pytest.fixture(scope="module")
def bnb():
    silence_bitsandbytes()
    return pytest.importorskip("bitsandbytes", reason=INSTALL)


def fp32_config(**overrides) -> QuantizationConfig:
    return QuantizationConfig(compute_dtype="float32", **overrides)


def lora_config(**overrides) -> LoraConfig:
    return LoraConfig(r=4, alpha=8, dropout=0.0, task_type=TaskType.SEQ_CLS, **overrides)


# ---------------------------------------------------------------- the number formats


def test_normal_float_levels_are_normal_quantiles_with_an_exact_zero():
    levels = normal_float_levels()
    assert levels.shape == (16,) and torch.all(levels[1:] > levels[:-1])
    assert levels[0] == -1 and levels[15] == 1 and levels[7] == 0
    assert (levels > 0).sum() == 8 and (levels < 0).sum() == 7
    # between two neighbouring positive levels lies 1/8 of the normal's mass above the median (up to the offset)
    normal = torch.distributions.Normal(0.0, 1.0)
    positive = levels[8:].double() * torch.special.ndtri(torch.tensor(0.9677083, dtype=torch.float64))
    shares = torch.diff(normal.cdf(positive.float()))
    assert torch.allclose(shares, shares[0].expand_as(shares), atol=1e-5)


def test_normal_float_levels_against_the_bitsandbytes_table(bnb):
    from bitsandbytes.backends.utils import _NF4_QUANT_TABLE as table

    ours = normal_float_levels()
    ulp = torch.nextafter(table.abs(), torch.tensor(2.0)) - table.abs()
    ulps = ((ours - table).abs() / ulp).round().int()
    print("NF4 levels, ours / bitsandbytes / ulps apart:")
    for mine, theirs, apart in zip(ours.tolist(), table.tolist(), ulps.tolist(), strict=True):
        print(f"  {mine:+.10f} {theirs:+.10f} {apart}")
    # Derived in float64 from the normal's quantiles; bitsandbytes' table was computed once elsewhere.
    assert ulps.max() <= 8 and int((ulps > 0).sum()) <= 12
    assert torch.equal(ours[[0, 7, 15]], table[[0, 7, 15]])


def test_dynamic_8bit_levels_equal_bitsandbytes(bnb):
    assert torch.equal(dynamic_8bit_levels(), bnb.functional.create_dynamic_map(signed=True))


def test_packing_puts_the_first_code_in_the_high_half():
    codes = torch.tensor([1, 2, 15, 0, 9], dtype=torch.uint8)
    packed = pack_4bit(codes)
    assert packed.tolist() == [0x12, 0xF0, 0x97]  # the odd count padded with the zero code, 7
    assert torch.equal(unpack_4bit(packed, 5), codes)


@pytest.mark.parametrize("shape", SHAPES)
def test_nf4_codes_and_scales_equal_bitsandbytes(bnb, shape):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.05
    packed, state = bnb.functional.quantize_4bit(
        weight, blocksize=64, quant_type="nf4", compress_statistics=False
    )
    ours = quantize_nf4(weight, double_quant=False)
    assert torch.equal(ours["packed"], packed.reshape(-1))
    assert torch.equal(ours["absmax"], state.absmax)
    expected = bnb.functional.dequantize_4bit(packed, state)  # levels a few ulps apart: float tolerance
    assert torch.allclose(dequantize_nf4(ours, weight.shape), expected, rtol=1e-6, atol=1e-8)


def double_quant_differences(bnb, weight) -> tuple[int, int, int, dict, object]:
    """How many of our 8-bit scale codes differ from bitsandbytes', out of how many, by at most how
    many steps; asserting that where they differ, ours is the nearer level (bitsandbytes' C kernel
    searches the 256 levels approximately)."""
    packed, state = bnb.functional.quantize_4bit(
        weight, blocksize=64, quant_type="nf4", compress_statistics=True
    )
    ours = quantize_nf4(weight)
    assert torch.equal(ours["absmax_offset"], state.offset)
    assert torch.equal(ours["absmax_scales"], state.state2.absmax)
    levels = dynamic_8bit_levels()
    centred = quantize_nf4(weight, double_quant=False)["absmax"] - ours["absmax_offset"]
    scaled = centred / ours["absmax_scales"].repeat_interleave(256)[: centred.numel()]
    mine, theirs = ours["absmax_codes"].long(), state.absmax.long()
    assert torch.all((levels[mine] - scaled).abs() <= (levels[theirs] - scaled).abs())
    steps = (mine - theirs).abs()
    return int((steps > 0).sum()), steps.numel(), int(steps.max()), ours, (packed, state)


@pytest.mark.parametrize("shape", SHAPES[:3])  # (3, 5) has one block of scales, all equal to their mean
def test_double_quantization_codes_within_one_step_of_bitsandbytes(bnb, shape):
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.05
    differ, total, steps, ours, (packed, state) = double_quant_differences(bnb, weight)
    print(f"{shape}: {differ} of {total} absmax codes one step apart")
    assert steps <= 1
    assert torch.equal(ours["packed"], packed.reshape(-1))
    assert differ <= max(1, total // 200)
    # the same codes dequantize to the same weights: ours from bitsandbytes' stored state
    theirs = {
        "packed": packed.reshape(-1),
        "absmax_codes": state.absmax,
        "absmax_scales": state.state2.absmax,
        "absmax_offset": state.offset,
    }
    expected = bnb.functional.dequantize_4bit(packed, state)
    assert torch.allclose(dequantize_nf4(theirs, weight.shape), expected, rtol=1e-6, atol=1e-7)


def test_nf4_on_real_minilm_weights_equals_bitsandbytes(bnb):
    from bitsandbytes.backends.utils import _NF4_QUANT_TABLE as table

    from adapterlib.modeling import load_classifier
    from adapterlib.quantize import quantize_blocks

    model = load_classifier(pooling="mean")
    differ = total = codes_apart = weights = most_steps = 0
    for name in ("attention.self.query", "intermediate.dense", "output.dense"):
        weight = model.bert.encoder.layer[3].get_submodule(name).weight.detach()
        d, t, steps, ours, (packed, state) = double_quant_differences(bnb, weight)
        differ, total, most_steps = differ + d, total + t, max(most_steps, steps)
        theirs = unpack_4bit(packed.reshape(-1), weight.numel())
        # computed bitsandbytes' way from its own table the codes are equal; from the derived levels
        # (a few ulps apart) a weight that lies within an ulp of a midpoint may fall on the other side
        assert torch.equal(quantize_blocks(weight, table, 64)[0], theirs)
        codes_apart += int((unpack_4bit(ours["packed"], weight.numel()) != theirs).sum())
        weights += weight.numel()
        error = (dequantize_nf4(ours, weight.shape) - weight).abs() / weight.abs().max()
        assert error.max() < 0.2  # half the widest gap between levels, relative to the largest weight
    print(
        f"MiniLM layer 3: {differ} of {total} absmax codes one step apart; {codes_apart} of {weights} NF4 codes"
    )
    assert differ <= total // 200
    assert codes_apart <= 2


def test_int8_is_within_half_a_step_of_every_weight():
    weight = torch.randn(48, 40, generator=torch.Generator().manual_seed(0))
    stored = quantize_int8(weight)
    assert stored["codes"].dtype == torch.int8 and stored["codes"].abs().max() == 127
    step = stored["row_absmax"][:, None] / 127
    assert torch.all((dequantize_int8(stored) - weight).abs() <= step / 2 + 1e-7)


def test_blockwise_dequantization_gives_a_short_last_block_its_own_scale():
    levels = normal_float_levels()
    values = torch.cat([torch.full((64,), 0.5), torch.full((3,), -4.0)])
    from adapterlib.quantize import quantize_blocks

    codes, absmax = quantize_blocks(values, levels, 64)
    assert absmax.tolist() == [0.5, 4.0]
    assert torch.equal(dequantize_blocks(codes, absmax, levels, 64), values)


# ---------------------------------------------------------------- the quantized model


def test_quantize_model_replaces_the_layers_linears_only():
    model = tiny_classifier()
    before = {n: p.clone() for n, p in model.named_parameters()}
    quantize_model(model, fp32_config())
    quantized = [n for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    assert len(quantized) == 2 * 6 and all(n.startswith("bert.encoder.layer.") for n in quantized)
    assert isinstance(model.classifier, nn.Linear) and not isinstance(model.classifier, QuantizedLinear)
    assert torch.equal(
        model.bert.embeddings.word_embeddings.weight, before["bert.embeddings.word_embeddings.weight"]
    )
    assert not any(p.requires_grad for p in model.parameters())
    report = storage_report(model)
    assert report["bits_per_quantized_weight"] == pytest.approx(
        8 * (0.5 + 1 / 64 + 4 * 2 / report["quantized_weights"]) * 1, rel=0.02
    )


def test_bits_per_weight_with_double_quantization_on_minilm():
    from adapterlib.modeling import load_classifier

    report = storage_report(load_classifier(pooling="mean", quantization="nf4"))
    assert report["bits_per_quantized_weight"] == pytest.approx(4 + 8 / 64 + 32 / (64 * 256), abs=1e-3)


def test_quantized_base_is_close_to_the_float_base(batch):
    model = tiny_classifier()
    expected = model(**batch).logits
    for method, tolerance in (("int8", 0.02), ("nf4", 0.2)):
        quantized = quantize_model(tiny_classifier(), fp32_config(method=method))
        assert torch.allclose(quantized(**batch).logits, expected, atol=tolerance)


def test_lora_on_a_quantized_base_trains_lora_and_head_only(batch):
    model = get_peft_model(quantize_model(tiny_classifier(), "nf4"), lora_config())
    perturbed(model)
    model(**batch, labels=torch.tensor([0, 1])).loss.backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert trained and all(".adapters." in n for n in trained)
    assert {n.split(".adapters.")[1].split(".")[1] for n in trained} >= {"A", "B"}


def test_lora_over_ours_equals_lora_over_bitsandbytes_linear4bit(bnb):
    """128 inputs: bitsandbytes 0.50.2's CPU kernel dequantizes some rows wrongly when a row's
    length is even but not a multiple of 64 (see the next test)."""
    torch.manual_seed(0)
    linear = nn.Linear(128, 40)
    theirs = bnb.nn.Linear4bit(
        128, 40, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4"
    )
    theirs.weight = bnb.nn.Params4bit(
        linear.weight.data.clone(), requires_grad=False, quant_type="nf4", blocksize=64
    )
    theirs.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    theirs = theirs.to("cpu")  # quantizes
    ours = QuantizedLinear(linear, fp32_config())
    state = theirs.weight.quant_state
    assert torch.equal(ours.packed, theirs.weight.data.reshape(-1))
    ours.absmax_codes.copy_(state.absmax)  # hold exactly bitsandbytes' codes (ours may be a step apart)
    lora_ours, lora_theirs = LoraLinear(ours), LoraLinear(theirs)
    update = LoraUpdate(128, 40, r=4, alpha=8)
    nn.init.normal_(update.B, std=0.1)
    for site in (lora_ours, lora_theirs):
        site.add("default", update)
        site.active_adapter = "default"
    x = torch.randn(5, 128, requires_grad=True)
    results = []
    for site in (lora_ours, lora_theirs):
        update.zero_grad()
        x.grad = None
        out = site(x)
        (out**2).sum().backward()
        results.append((out.detach(), update.A.grad.clone(), update.B.grad.clone(), x.grad.clone()))
    for mine, reference in zip(*results, strict=True):
        assert torch.allclose(mine, reference, rtol=1e-5, atol=1e-5)


def test_bitsandbytes_cpu_dequantization_of_rows_of_96_is_off_and_ours_is_not(bnb):
    """Found while checking: the same codes and scales, dequantized by bitsandbytes' CPU kernel for
    a 40 x 96 weight, land up to 5 times further from the weight than half the widest level gap
    allows; its pure-PyTorch path (odd row lengths) and ours agree with each other and the bound."""
    weight = torch.randn(40, 96, generator=torch.Generator().manual_seed(0)) * 0.1
    packed, state = bnb.functional.quantize_4bit(
        weight, blocksize=64, quant_type="nf4", compress_statistics=False
    )
    ours = dequantize_nf4({"packed": packed.reshape(-1), "absmax": state.absmax}, weight.shape)
    bound = 0.5 * 0.3039 * state.absmax.max()  # half the widest gap between NF4 levels (-1 to -0.696)
    assert (ours - weight).abs().max() <= bound
    if (bnb.functional.dequantize_4bit(packed, state) - weight).abs().max() <= bound:
        pytest.fail("bitsandbytes' CPU dequantization of rows of 96 is now right: drop this test")


# ---------------------------------------------------------------- bad input


def test_a_second_quantization_is_refused_and_leaves_the_model_unchanged():
    model = quantize_model(tiny_classifier(), "nf4")
    with refused_unchanged(model, ValueError, "already quantized"):
        quantize_model(model, "int8")


def test_quantizing_an_adapted_model_is_refused():
    model = get_peft_model(tiny_classifier(), lora_config())
    with refused_unchanged(model, ValueError, "quantize the base model first"):
        quantize_model(model, "nf4")


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="use one of: int8, nf4"):
        QuantizationConfig(method="nf3")
    with pytest.raises(ValueError, match="use 'nf4', 'int8'"):
        quantize_model(tiny_classifier(), "fp4")
    with pytest.raises(ValueError, match="a quantized base is frozen"):
        Recipe(method="full", base_quantization="nf4")
    with pytest.raises(ValueError, match="base_quantization 'nf2' is not known"):
        Recipe(method="lora", base_quantization="nf2")


def test_a_linear_that_does_not_divide_into_blocks_gets_a_short_last_block(batch):
    model = tiny_classifier(hidden_size=36, intermediate_size=50, num_attention_heads=4)
    quantize_model(model, fp32_config())
    layer = model.bert.encoder.layer[0].intermediate.dense  # 50 x 36 = 1800 = 28 * 64 + 8
    assert layer.absmax_codes.numel() == 29
    reference = tiny_classifier(hidden_size=36, intermediate_size=50, num_attention_heads=4)
    assert torch.allclose(model(**batch).logits, reference(**batch).logits, atol=0.2)


def test_merging_into_a_quantized_base_is_refused_and_leaves_it_unchanged():
    model = perturbed(get_peft_model(quantize_model(tiny_classifier(), "nf4"), lora_config()))
    before = snapshot(model)
    for merge in (model.merge_adapter, model.merge_and_unload):
        with pytest.raises(RuntimeError, match="merge_and_requantize"):
            merge()
        assert_unchanged(model, before)


def test_merge_and_requantize_folds_the_update_at_the_cost_of_rounding(batch):
    model = perturbed(
        get_peft_model(quantize_model(tiny_classifier(), fp32_config()), lora_config()), scale=0.3
    )
    expected = model(**batch).logits
    merged = merge_and_requantize(model)
    assert is_quantized(merged) and not any(isinstance(m, LoraLinear) for m in merged.modules())
    got = merged(**batch).logits
    assert not torch.equal(got, expected)  # requantization rounds the update
    assert torch.allclose(got, expected, atol=0.3)


def test_float_weights_loaded_into_a_quantized_model_are_refused():
    model = quantize_model(tiny_classifier(), "nf4")
    with pytest.raises(RuntimeError, match="holds its float weight"):
        model.load_state_dict(tiny_classifier().state_dict())


def test_a_quantized_state_dict_reloads_into_a_model_quantized_the_same_way(batch):
    model = quantize_model(tiny_classifier(seed=1), fp32_config())
    reloaded = quantize_model(tiny_classifier(seed=2), fp32_config())
    reloaded.load_state_dict(model.state_dict())
    assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


def test_the_package_works_without_bitsandbytes():
    code = (
        "import sys, adapterlib.quantize, adapterlib.train;"
        "assert 'bitsandbytes' not in sys.modules, 'bitsandbytes was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
