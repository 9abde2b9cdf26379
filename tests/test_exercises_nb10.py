"""Notebook 10's graders: one NF4 block quantized and packed, dequantized, and bits per weight."""

import pytest
import torch

from adapterlib.exercises import NotYet, Unanswered, check, grade
from adapterlib.quantize import quantize_blocks


def nearest(scaled: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return (scaled[:, None] - levels[None, :]).abs().argmin(dim=1).to(torch.uint8)


def pack(codes: torch.Tensor) -> torch.Tensor:
    return (codes[0::2] << 4) | codes[1::2]


def right_quantizer(block, levels):
    scale = block.abs().max()
    return pack(nearest(block / scale, levels)), float(scale)


def even_steps(block, levels):  # the nearest of 16 evenly spaced steps, not the nearest level
    scale = block.abs().max()
    return pack(torch.round((block / scale + 1) / 2 * 15).to(torch.uint8)), float(scale)


def max_not_absmax(block, levels):
    scale = block.max()
    return pack(nearest((block / scale).clamp(-1, 1), levels)), float(scale)


def sign_forgotten(block, levels):
    scale = block.abs().max()
    return pack(nearest(block.abs() / scale, levels)), float(scale)


def halves_swapped(block, levels):
    scale = block.abs().max()
    codes = nearest(block / scale, levels)
    return (codes[1::2] << 4) | codes[0::2], float(scale)


def shifted_by_one(block, levels):
    scale = block.abs().max()
    codes = nearest(block / scale, levels)
    codes = torch.cat([codes[1:], codes[:1]])
    return pack(codes), float(scale)


def calls_the_package(block, levels):
    codes, absmax = quantize_blocks(block, levels, 64)
    return pack(codes), float(absmax[0])


def test_right_quantizer_passes():
    assert "negative peak" in grade("10.quantize_block", right_quantizer)


@pytest.mark.parametrize(
    "mistake, words",
    [
        (even_steps, "evenly spaced"),
        (max_not_absmax, "largest magnitude"),
        (sign_forgotten, "keeping its sign"),
        (halves_swapped, "each pair swapped"),
        (shifted_by_one, "shifted by one"),
        (calls_the_package, "package's adapterlib.quantize.quantize_blocks"),
    ],
)
def test_quantizer_mistakes_are_named(mistake, words):
    with pytest.raises(NotYet, match=words):
        grade("10.quantize_block", mistake)


def test_feedback_never_shows_the_expected_codes():
    with pytest.raises(NotYet) as failure:
        grade("10.quantize_block", sign_forgotten)
    assert "tensor(" not in str(failure.value)


def test_unanswered_quantizer_returns_the_reference(capsys):
    def template(block, levels):
        raise NotImplementedError

    with pytest.raises(Unanswered):
        grade("10.quantize_block", template)
    reference = check("10.quantize_block", template)
    assert "Not answered" in capsys.readouterr().out
    block = torch.randn(64)
    packed, scale = reference(block, torch.linspace(-1, 1, 16))
    assert packed.dtype == torch.uint8 and packed.numel() == 32 and scale == float(block.abs().max())


def right_dequantizer(packed, scale, levels):
    codes = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
    return levels[codes.long()] * scale


def no_scale(packed, scale, levels):
    return right_dequantizer(packed, 1.0, levels)


def low_half_first(packed, scale, levels):
    codes = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)
    return levels[codes.long()] * scale


def even_levels(packed, scale, levels):
    codes = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
    return (codes.float() / 15 * 2 - 1) * scale


def test_right_dequantizer_passes():
    assert "levels[code] * scale" in grade("10.dequantize", right_dequantizer)


@pytest.mark.parametrize(
    "mistake, words",
    [
        (no_scale, "multiply by the block's scale"),
        (low_half_first, "high 4 bits"),
        (even_levels, "levels table"),
    ],
)
def test_dequantizer_mistakes_are_named(mistake, words):
    with pytest.raises(NotYet, match=words):
        grade("10.dequantize", mistake)


def test_bits_per_weight():
    assert "4.127" in grade("10.bits_per_weight", 4 + 8 / 64 + 32 / (64 * 256))
    for wrong, words in [
        (4.5, "float32"),
        (4.0, "code alone"),
        (4.125, "block of 256"),
        (0.5, "bytes"),
        (5, "add"),
    ]:
        with pytest.raises(NotYet, match=words):
            grade("10.bits_per_weight", wrong)
    with pytest.raises(NotYet, match="a plain number"):
        grade("10.bits_per_weight", "four")
