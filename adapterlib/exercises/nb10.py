r"""Notebook 10 (LoRA on a 4-bit base): one block of NF4 by hand, its way back, and its cost in bits.

* ``10.quantize_block``: a function ``quantize_block(block, levels)`` taking 64 float32 weights
  and the 16 NF4 levels (ascending) and returning ``(packed, scale)``: ``scale`` the block's
  absolute maximum, ``packed`` 32 uint8 bytes, each holding the codes of two neighbouring weights
  (the first in the high 4 bits), a weight's code being the index of the level nearest to
  ``weight / scale``.
* ``10.dequantize``: a function ``dequantize_block(packed, scale, levels)`` returning the 64
  float32 weights ``levels[code] * scale`` that ``packed`` stands for.
* ``10.bits_per_weight``: the bits each weight costs in NF4 with double quantization (blocks of
  64 weights, their float32 scales stored as 8-bit codes in blocks of 256 with a float32 scale
  each), as a number.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import quantize
from ..quantize import normal_float_levels, pack_4bit, quantize_blocks, unpack_4bit
from . import NotYet, exercise
from .contract import call

BLOCK = 64


def quantize_block(block: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """One block of NF4: ``(packed codes, absmax)``."""
    codes, absmax = quantize_blocks(block, levels, BLOCK)
    return pack_4bit(codes), float(absmax[0])


def dequantize_block(packed: torch.Tensor, scale: float, levels: torch.Tensor) -> torch.Tensor:
    return levels[unpack_4bit(packed, BLOCK).long()] * scale


def test_blocks() -> list[torch.Tensor]:
    """Blocks a quantizer must get right: normal weights, a block whose largest magnitude is
    negative, one with an outlier, one with exact zeros, and weights that sit near midpoints."""
    generator = torch.Generator().manual_seed(10)
    normal = [torch.randn(BLOCK, generator=generator) * 0.05 for _ in range(4)]
    negative_peak = torch.randn(BLOCK, generator=generator).abs() * 0.02
    negative_peak[5] = -0.3
    outlier = torch.randn(BLOCK, generator=generator) * 0.01
    outlier[40] = 0.5
    zeros = torch.randn(BLOCK, generator=generator) * 0.05
    zeros[::3] = 0
    return [*normal, negative_peak, outlier, zeros]


def as_codes(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes read from bytes both ways round: high half first (as asked), low half first."""
    packed = packed.to(torch.uint8).reshape(-1)
    high_first = torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)
    low_first = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)
    return high_first, low_first


def diagnose_codes(codes: torch.Tensor, block: torch.Tensor, scale: float, levels: torch.Tensor) -> str:
    """Name the usual mistake behind wrong codes (called once the scale is right)."""
    scaled = block / scale
    if torch.equal(codes, torch.round((scaled + 1) / 2 * 15).to(codes.dtype)):
        return (
            "your codes are the nearest of 16 evenly spaced steps on [-1, 1]; the NF4 levels are not "
            "evenly spaced: find the level nearest in value (smallest |level - w/scale|)."
        )
    if torch.equal(codes, quantize_blocks(scaled.abs(), levels, BLOCK)[0].to(codes.dtype)):
        return (
            "negative weights got the codes of positive levels: divide the weight itself by the scale, "
            "keeping its sign, and the code of -0.7 is near the bottom of the table."
        )
    wrong = int((codes != quantize_blocks(block, levels, BLOCK)[0].to(codes.dtype)).sum())
    return f"{wrong} of {BLOCK} codes are not the index of the nearest level to weight / scale."


@exercise("10.quantize_block", kind="function", reference=lambda: quantize_block, forbidden=(quantize,))
def grade_quantize_block(answer: Callable[[torch.Tensor, torch.Tensor], tuple]) -> str:
    """Bytes and scale equal to the package's NF4 on 7 blocks, with the usual mistakes named."""
    levels = normal_float_levels()
    blocks = test_blocks()
    for number, block in enumerate(blocks, start=1):
        result = call(answer, block, levels, what=f"on test block {number}")
        if not isinstance(result, tuple) or len(result) != 2:
            raise NotYet(f"return a pair (packed, scale); your function returned {type(result).__name__}.")
        packed, scale = result
        if not isinstance(packed, torch.Tensor):
            raise NotYet(f"packed should be a tensor of bytes, not {type(packed).__name__}.")
        expected_packed, expected_scale = quantize_block(block, levels)
        if isinstance(scale, bool) or not isinstance(scale, (float, int)):
            raise NotYet(f"scale should be a Python float (float(...)), not {type(scale).__name__}.")
        scale = float(scale)
        if scale != expected_scale:
            if scale == float(block.max()):
                raise NotYet(
                    f"in block {number} the largest weight is negative and your scale is block.max() = "
                    f"{scale:.3g}: the scale is the largest magnitude, so every w / scale lies in [-1, 1]."
                )
            raise NotYet(
                f"in block {number} your scale is {scale:.4g}; it should map the block into [-1, 1] exactly."
            )
        if packed.numel() != BLOCK // 2:
            raise NotYet(
                f"packed holds {packed.numel()} values; two 4-bit codes share a byte, so 64 weights fill 32 bytes."
            )
        if packed.dtype != torch.uint8:
            raise NotYet(f"packed is {packed.dtype}; store the bytes as torch.uint8.")
        if torch.equal(packed.reshape(-1), expected_packed):
            continue
        codes = unpack_4bit(expected_packed, BLOCK)
        high_first, low_first = as_codes(packed)
        if torch.equal(low_first, codes):
            raise NotYet(
                "your bytes hold the right codes with each pair swapped: the first weight of a pair goes "
                "into the high 4 bits (code_0 << 4 | code_1)."
            )
        if torch.equal(high_first[:-1], codes[1:]) or torch.equal(high_first[1:], codes[:-1]):
            raise NotYet(
                "your bytes hold the right codes shifted by one place: byte i holds the codes of weights "
                "2i and 2i + 1."
            )
        raise NotYet(f"in block {number}: {diagnose_codes(high_first, block, expected_scale, levels)}")
    return (
        f"your bytes and scales equal NF4's on {len(blocks)} blocks, a negative peak, an outlier and zeros "
        "among them."
    )


@exercise("10.dequantize", kind="function", reference=lambda: dequantize_block, forbidden=(quantize,))
def grade_dequantize(answer: Callable[[torch.Tensor, float, torch.Tensor], torch.Tensor]) -> str:
    """The 64 weights equal ``levels[code] * scale`` for packed blocks of the test set."""
    levels = normal_float_levels()
    for number, block in enumerate(test_blocks(), start=1):
        packed, scale = quantize_block(block, levels)
        expected = dequantize_block(packed, scale, levels)
        result = call(answer, packed, scale, levels, what=f"on test block {number}")
        if not isinstance(result, torch.Tensor):
            raise NotYet(f"return a tensor of 64 weights, not {type(result).__name__}.")
        result = result.reshape(-1).float()
        if result.numel() != BLOCK:
            raise NotYet(f"your function returned {result.numel()} values; 32 bytes hold 64 weights.")
        if torch.allclose(result, expected, rtol=1e-6, atol=1e-9):
            continue
        codes = unpack_4bit(packed, BLOCK).long()
        if torch.allclose(result, levels[codes], rtol=1e-6):
            raise NotYet("your weights are the levels themselves: multiply by the block's scale.")
        swapped = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1).long()
        if torch.allclose(result, levels[swapped] * scale, rtol=1e-6):
            raise NotYet("you read the low 4 bits first; the first weight of a pair is in the high 4 bits.")
        if torch.allclose(result, (codes.float() / 15 * 2 - 1) * scale, rtol=1e-6):
            raise NotYet("you spread the codes evenly over [-1, 1]; look each code up in the levels table.")
        worst = float((result - expected).abs().max())
        raise NotYet(f"in block {number} your weights are up to {worst:.3g} away from levels[code] * scale.")
    return "your weights equal levels[code] * scale on every test block."


BITS_WITH_DOUBLE_QUANT = 4 + 8 / 64 + 32 / (64 * 256)


@exercise("10.bits_per_weight", kind="number")
def grade_bits_per_weight(answer: float) -> str:
    """4 bits of code, 8/64 for the 8-bit scale, 32/(64*256) for the scale of the scales."""
    value = float(answer)
    if abs(value - BITS_WITH_DOUBLE_QUANT) < 5e-4:
        return "4 + 8/64 + 32/(64*256) = 4.127 bits: the scales cost 0.127 bits a weight instead of 0.5."
    named = {
        4.0: "that is the code alone; every block of 64 also stores a scale.",
        4.5: "that counts each block's scale as a float32 (32/64); with double quantization it is an 8-bit code.",
        4.125: "the 8-bit scales are right, but each block of 256 of them keeps a float32 scale of its own.",
        0.5: "that is in bytes; the question asks for bits.",
    }
    for wrong, message in named.items():
        if abs(value - wrong) < 5e-4:
            raise NotYet(message)
    raise NotYet(
        f"{value:g} bits is not it: add the 4-bit code, the 8-bit scale shared by 64 weights and the "
        "float32 scale shared by 64 * 256 weights."
    )
