r"""A frozen base in 4 or 8 bits with LoRA on top (QLoRA: Dettmers et al., 2023).

**NormalFloat-4 (NF4).** Pre-trained weights are close to normally distributed, so 16 levels
that each hold an equal share of a standard normal use 4 bits better than 16 evenly spaced
ones. The levels are quantiles of :math:`\mathcal N(0, 1)`, scaled into :math:`[-1, 1]`, with
an exact zero (padding and zero weights stay zero), 8 on the positive side and 7 on the negative:

.. math::  q^+_i = \Phi^{-1}\!\left(\tfrac12 + (\delta - \tfrac12)\tfrac{8 - i}{8}\right),\ i = 0..7,
   \qquad q^-_j = -\Phi^{-1}\!\left(\tfrac12 + (\delta - \tfrac12)\tfrac{7 - j}{7}\right),\ j = 0..6,

then :math:`\{q^-\} \cup \{0\} \cup \{q^+\}` divided by its largest value, with
:math:`\delta = 1 - \tfrac12(\tfrac{1}{2 \cdot 15} + \tfrac{1}{2 \cdot 16}) = 0.9677`, the
offset that keeps :math:`\Phi^{-1}` finite at the ends (bitsandbytes' ``create_normal_map``).

**Block-wise absmax.** The flattened weight (row after row) is cut into blocks of 64; each block
keeps its absolute maximum :math:`m_b` in float32 and each weight the index of the level nearest
to :math:`w / m_b \in [-1, 1]`. A weight count that is not a multiple of 64 leaves a shorter
last block. Two 4-bit codes share one byte, the first in the high half. Dequantizing is a table
look-up times the block's scale: :math:`\hat w = \text{level}[c] \cdot m_b`.

**Double quantization.** The float32 scales cost :math:`32/64 = 0.5` bits per weight. They are
quantized once more: their mean :math:`\mu` is subtracted (so the values are centred on zero and
the signed 8-bit type is used on both sides), then they are cut into blocks of 256, each with a
float32 absmax, and stored as 8-bit codes of bitsandbytes' dynamic type
(:func:`dynamic_8bit_levels`). Bits per weight: :math:`4 + 8/64 + 32/(64 \cdot 256) = 4.127`.

**int8 absmax.** The middle point: each row of ``W`` keeps its absmax :math:`m_r` and each
weight :math:`\mathrm{round}(127\, w / m_r)`, 8 bits plus :math:`32/k` for a row of ``k`` inputs.

**What is quantized.** Every ``nn.Linear`` inside the Transformer layers (:func:`quantize_model`):
these hold 10.6M of MiniLM's 22.6M parameters and all the matrix products. The embeddings stay
float32 (a table look-up, no matrix product to speed up, and one row per token seen in a batch),
as do the LayerNorms (768 numbers a layer that set the scale of everything after them) and the
classifier head and pooler (trained, or the last small step to the logits; peft's QLoRA recipe
skips ``classifier`` too).

**The forward pass.** :class:`QuantizedLinear` keeps only the codes and scales. Each forward
dequantizes the weight into the compute type (bfloat16 where the CPU has bf16 instructions,
float32 elsewhere) and multiplies; nothing of it is trainable. LoRA wraps the layer like any
``nn.Linear`` and keeps its ``A`` and ``B`` in float32, so gradients flow into LoRA only. The
dequantized weight lives only during the pass (autograd keeps it until the backward pass to form
the input's gradient), so the saving is in the stored base: 4.127 bits instead of 32 per weight.
On a CPU the look-ups cost time; quantization pays in memory, not speed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .inject import find_layers, is_adapted

QUANTIZATIONS = ("none", "int8", "nf4")
NF4_BLOCK = 64
ABSMAX_BLOCK = 256
NF4_OFFSET = 1 - 0.5 * (1 / (2 * 15) + 1 / (2 * 16))  # 0.9677083, bitsandbytes' create_normal_map
ZERO_CODE = 7  # the index of NF4's exact zero: the code a padding half-byte gets


# ---------------------------------------------------------------- the number formats


def normal_float_levels(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels in ascending order, from quantiles of the standard normal (float32).

    8 positive quantiles, 7 negative, and an exact 0, divided by the largest so they span [-1, 1].
    Computed in float64 and rounded once to float32.
    """
    quantile = torch.special.ndtri  # the inverse of the standard normal's distribution function
    positive = quantile(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    negative = -quantile(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return (levels / levels.max()).to(torch.float32)


def dynamic_8bit_levels() -> torch.Tensor:
    """The 256 levels of bitsandbytes' signed dynamic 8-bit type, ascending (float32).

    A sign, a decimal exponent ``e`` in 0..6 and a fraction: for exponent ``e`` the ``2**e``
    midpoints of ``2**e + 1`` even steps from 0.1 to 1, times ``10**(e - 6)``, on both sides; plus
    0 and 1. Small magnitudes get few fraction levels, large ones many (Dettmers, 2016).
    """
    values = [0.0, 1.0]
    for exponent in range(7):
        edges = torch.linspace(0.1, 1, 2**exponent + 1, dtype=torch.float32)
        magnitudes = (10.0 ** (exponent - 6) * (edges[:-1] + edges[1:]) / 2).tolist()
        values += magnitudes + [-m for m in magnitudes]
    return torch.tensor(sorted(values), dtype=torch.float32)


def quantize_blocks(
    values: torch.Tensor, levels: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, absmax)``: ``values`` flattened, cut into blocks of ``block`` (the last may be
    shorter), each block scaled by ``1 / absmax`` into [-1, 1] and every value given the index of
    the nearest of the sorted ``levels`` (found by comparing with the midpoints between levels).
    ``codes`` is uint8 with one code per value; ``absmax`` float32 with one scale per block."""
    flat = values.reshape(-1).float()
    padded = nn.functional.pad(flat, (0, -flat.numel() % block)).reshape(
        -1, block
    )  # zeros leave absmax as it is
    absmax = padded.abs().amax(dim=1)
    scaled = torch.clamp(padded * (1.0 / absmax.clamp(min=1e-38))[:, None], -1, 1).reshape(-1)[: flat.numel()]
    midpoints = (levels[:-1] + levels[1:]) / 2
    return torch.bucketize(scaled, midpoints).to(torch.uint8), absmax


def dequantize_blocks(
    codes: torch.Tensor, absmax: torch.Tensor, levels: torch.Tensor, block: int
) -> torch.Tensor:
    """Flat float32 values ``levels[code] * absmax[its block]``, the inverse of :func:`quantize_blocks`."""
    return levels[codes.long()] * absmax.repeat_interleave(block)[: codes.numel()]


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes a byte, the first in the high half; an odd count is padded with the zero code."""
    if codes.numel() % 2:
        codes = torch.cat([codes, torch.full((1,), ZERO_CODE, dtype=torch.uint8)])
    return (codes[0::2] << 4) | codes[1::2]


def unpack_4bit(packed: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` 4-bit codes held in ``packed`` (the inverse of :func:`pack_4bit`)."""
    return torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[:count]


# ---------------------------------------------------------------- quantized tensors


@dataclass
class QuantizationConfig:
    """How the frozen base is stored: ``method`` ``"nf4"`` (block-wise 4-bit NormalFloat,
    ``block_size`` weights a scale, the scales quantized again when ``double_quant``) or ``"int8"``
    (per-row absmax). ``compute_dtype`` ``"auto"`` dequantizes into bf16 where the CPU has bf16
    instructions and into float32 elsewhere; ``"float32"`` and ``"bfloat16"`` force one.
    ``skip_modules`` names Linear layers kept in float (peft's ``llm_int8_skip_modules``)."""

    method: str = "nf4"
    block_size: int = NF4_BLOCK
    double_quant: bool = True
    compute_dtype: str = "auto"
    skip_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in QUANTIZATIONS[1:]:
            raise ValueError(f"quantization {self.method!r} is not known; use one of: int8, nf4.")
        if self.compute_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(
                f"compute_dtype {self.compute_dtype!r} is not known; use auto, float32 or bfloat16."
            )
        if not isinstance(self.block_size, int) or self.block_size < 2 or self.block_size % 2:
            raise ValueError(
                f"block_size must be an even integer of at least 2, e.g. 64; got {self.block_size!r}."
            )
        self.skip_modules = tuple(self.skip_modules)

    def torch_compute_dtype(self) -> torch.dtype:
        if self.compute_dtype == "auto":
            from .modeling import cpu_computes_bf16

            return torch.bfloat16 if cpu_computes_bf16() else torch.float32
        return getattr(torch, self.compute_dtype)


def as_config(quantization: str | QuantizationConfig) -> QuantizationConfig:
    """A :class:`QuantizationConfig` from a config or the name of a method (``"nf4"``, ``"int8"``)."""
    if isinstance(quantization, QuantizationConfig):
        return quantization
    if not isinstance(quantization, str) or quantization not in QUANTIZATIONS[1:]:
        raise ValueError(
            f"quantization {quantization!r} is not known; use 'nf4', 'int8' or a QuantizationConfig."
        )
    return QuantizationConfig(method=quantization)


def quantize_nf4(
    weight: torch.Tensor, block: int = NF4_BLOCK, double_quant: bool = True
) -> dict[str, torch.Tensor]:
    """The NF4 form of ``weight``: ``packed`` codes and the block scales, as ``absmax`` (float32)
    or, with ``double_quant``, as ``absmax_codes`` (uint8), ``absmax_scales`` (float32, one per
    256 scales) and ``absmax_offset`` (their mean)."""
    codes, absmax = quantize_blocks(weight, normal_float_levels(), block)
    stored = {"packed": pack_4bit(codes)}
    if not double_quant:
        return stored | {"absmax": absmax}
    offset = absmax.mean()
    absmax_codes, absmax_scales = quantize_blocks(absmax - offset, dynamic_8bit_levels(), ABSMAX_BLOCK)
    return stored | {"absmax_codes": absmax_codes, "absmax_scales": absmax_scales, "absmax_offset": offset}


def nf4_scales(stored: dict[str, torch.Tensor]) -> torch.Tensor:
    """The float32 block scales of an NF4 weight, undoing the double quantization if there was one."""
    if "absmax" in stored:
        return stored["absmax"]
    centred = dequantize_blocks(
        stored["absmax_codes"], stored["absmax_scales"], dynamic_8bit_levels(), ABSMAX_BLOCK
    )
    return centred + stored["absmax_offset"]


def dequantize_nf4(
    stored: dict[str, torch.Tensor], shape: torch.Size, block: int = NF4_BLOCK
) -> torch.Tensor:
    """The float32 weight of ``shape`` that :func:`quantize_nf4` stored."""
    codes = unpack_4bit(stored["packed"], math.prod(shape))
    return dequantize_blocks(codes, nf4_scales(stored), normal_float_levels(), block).reshape(shape)


def quantize_int8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-row absmax int8: ``codes = round(127 w / m_row)`` (int8) and ``row_absmax`` (float32)."""
    row_absmax = weight.float().abs().amax(dim=1).clamp(min=1e-38)
    codes = torch.round(weight.float() / row_absmax[:, None] * 127).to(torch.int8)
    return {"codes": codes, "row_absmax": row_absmax}


def dequantize_int8(stored: dict[str, torch.Tensor]) -> torch.Tensor:
    return stored["codes"].float() * (stored["row_absmax"][:, None] / 127)


# ---------------------------------------------------------------- the layer


class QuantizedLinear(nn.Linear):
    """A frozen Linear stored as NF4 or int8 codes, dequantized in every forward pass.

    It is an ``nn.Linear`` for everything that looks for one (LoRA's targeting, ``in_features``),
    but holds no float weight: ``weight`` reads the dequantized float32 weight; assigning to it
    (as merging an adapter does) is refused, see :func:`merge_and_requantize`. The bias stays a
    frozen float32 parameter.
    """

    def __init__(self, linear: nn.Linear, config: QuantizationConfig) -> None:
        nn.Module.__init__(self)
        weight = linear.weight.detach()
        if not weight.is_floating_point() or weight.numel() == 0:
            raise ValueError(
                f"cannot quantize a Linear with a {weight.dtype} weight of shape {tuple(weight.shape)}; "
                "quantize a float model."
            )
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.config = config
        self.compute_dtype = config.torch_compute_dtype()
        self.weight_shape = weight.shape
        self.store(weight)
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)
        )

    def store(self, weight: torch.Tensor) -> None:
        """Quantize ``weight`` into this layer's buffers (replacing those there)."""
        if self.config.method == "nf4":
            stored = quantize_nf4(weight, self.config.block_size, self.config.double_quant)
        else:
            stored = quantize_int8(weight)
        for name, tensor in stored.items():
            self.register_buffer(name, tensor.to(weight.device))

    def stored(self) -> dict[str, torch.Tensor]:
        return dict(self.named_buffers(recurse=False))

    def dequantized(self) -> torch.Tensor:
        """The float32 weight the codes stand for."""
        if self.config.method == "nf4":
            return dequantize_nf4(self.stored(), self.weight_shape, self.config.block_size)
        return dequantize_int8(self.stored())

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        return self.dequantized()

    @weight.setter
    def weight(self, value: torch.Tensor) -> None:
        raise RuntimeError(
            "the base weights are quantized: an adapter cannot be merged into them and taken out again. "
            "Use adapterlib.quantize.merge_and_requantize(model), which dequantizes, adds the update and "
            "quantizes again (as peft does), or keep the adapter unmerged."
        )

    def storage_bytes(self) -> int:
        """Bytes of the stored weight (codes and scales), bias excluded."""
        return sum(t.numel() * t.element_size() for t in self.stored().values())

    def extra_repr(self) -> str:
        double = ", double_quant" if self.config.method == "nf4" and self.config.double_quant else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"{self.config.method}{double}, compute_dtype={str(self.compute_dtype).removeprefix('torch.')}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dequantized().to(self.compute_dtype)
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return nn.functional.linear(x.to(self.compute_dtype), weight, bias).to(x.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + "weight" in state_dict:
            raise RuntimeError(
                f"{prefix.rstrip('.')} is quantized but the state dict holds its float weight; load the "
                "float weights into a float model, then quantize it with quantize_model()."
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ---------------------------------------------------------------- the model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, QuantizedLinear) for m in model.modules())


def quantize_model(model: nn.Module, quantization: str | QuantizationConfig = "nf4") -> nn.Module:
    """Replace every ``nn.Linear`` inside the Transformer layers of ``model`` (in place) by a
    :class:`QuantizedLinear`; returns ``model``. Embeddings, LayerNorms, pooler and classifier
    stay as they are. Freezes the whole model (a PEFT method added afterwards unfreezes its own
    weights). Refuses a model that is already quantized or already carries adapters."""

    config = as_config(quantization)
    if is_quantized(model):
        raise ValueError(
            "the model is already quantized; load the float model again to quantize it another way."
        )
    if is_adapted(model):
        raise ValueError(
            "the model already carries adapters; quantize the base model first, then add the adapter."
        )
    targets = []
    for layer in find_layers(model):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear) and not any(
                name == s or name.endswith("." + s) for s in config.skip_modules
            ):
                parent = layer.get_submodule(name.rpartition(".")[0])
                targets.append((parent, name.rpartition(".")[2], module))
    quantized = [QuantizedLinear(module, config) for _, _, module in targets]  # all checked before any change
    for (parent, attribute, _), layer in zip(targets, quantized, strict=True):
        setattr(parent, attribute, layer)
    model.requires_grad_(False)
    return model


def storage_report(model: nn.Module) -> dict[str, Any]:
    """Parameters and bytes of the quantized Linear weights and of the model as stored."""
    layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
    weights = sum(math.prod(m.weight_shape) for m in layers)
    weight_bytes = sum(m.storage_bytes() for m in layers)
    tensors = list(model.parameters()) + list(model.buffers())
    return {
        "quantized_weights": weights,
        "quantized_weight_bytes": weight_bytes,
        "bits_per_quantized_weight": 8 * weight_bytes / weights if weights else None,
        "model_bytes": sum(t.numel() * t.element_size() for t in tensors),
    }


def merge_and_requantize(model: nn.Module) -> nn.Module:
    """The base model with the active LoRA update folded into its quantized weights, as peft does
    for a 4-bit base: dequantize ``W``, add :math:`\\Delta W`, quantize again; the adapter's
    trained head stays. Lossy: an update smaller than half a quantization step can vanish, and
    the other weights of its block may move when the block's absmax changes."""
    from .methods.lora import LoraLinear
    from .peft_model import PeftModel

    if not isinstance(model, PeftModel):
        raise TypeError("merge_and_requantize takes the PeftModel that holds the LoRA adapter.")
    if model.active_adapter is None or model.active_config.method != "lora":
        raise ValueError("merge_and_requantize folds LoRA only; the active adapter is not LoRA.")
    sites = [s for s in model.sites(LoraLinear) if isinstance(s.base_layer, QuantizedLinear) and s.active]
    with torch.no_grad():
        merged = [site.base_layer.dequantized() + site.active.delta_weight().float() for site in sites]
        for site, weight in zip(sites, merged, strict=True):
            site.base_layer.store(weight)
    return model._unload(keep=model.active_adapter)  # the sites give way to their base layers


def silence_bitsandbytes() -> None:
    """Keep bitsandbytes' note about an optional CPU kernel it cannot download out of the output."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
