r"""Notebook 7 (explore r): the LoRA rank that costs as much as a given adapter.

* ``7.matching_rank``: a function ``matching_rank(shape, adapter_r, placement, targets)`` returning the
  smallest LoRA rank :math:`r` whose parameter count reaches (>=) the adapter's:

  .. math:: r = \Bigl\lceil \frac{s\,(2 d r_a + d + r_a)}{\sum_{\text{targets}} (\text{in} + \text{out})} \Bigr\rceil

  with :math:`s` = 1 site per layer (Pfeiffer) or 2 (Houlsby); the layer count cancels. Graded against
  :func:`adapterlib.counting.method_parameter_count` on many shapes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from transformers import BertConfig

from .. import counting
from ..counting import method_parameter_count
from ..inject import targeted_linears
from ..methods.adapter import AdapterConfig
from ..methods.lora import LoraConfig
from . import NotYet, exercise
from .contract import call


def matching_rank(shape, adapter_r: int, placement: str, targets: Sequence[str]) -> int:
    """Smallest LoRA rank whose count, ``r * sum(in + out)`` per layer, reaches the adapter's
    ``s (2 d r_a + d + r_a)``."""
    d = shape.hidden_size
    sites = 2 if placement == "houlsby" else 1
    adapter = sites * (2 * d * adapter_r + d + adapter_r)
    per_rank = sum(m + k for m, k in targeted_linears(shape, targets).values())
    return math.ceil(adapter / per_rank)


def bert_shape(d: int, i: int, layers: int) -> BertConfig:
    return BertConfig(hidden_size=d, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=1)


SHAPES = {
    "toy (d=128, i=512, 2 layers)": bert_shape(128, 512, 2),
    "MiniLM-L6 (d=384, i=1536, 6 layers)": bert_shape(384, 1536, 6),
    "BERT-base (d=768, i=3072, 12 layers)": bert_shape(768, 3072, 12),
    "BERT-large (d=1024, i=4096, 24 layers)": bert_shape(1024, 4096, 24),
    "odd (d=100, i=250, 3 layers)": bert_shape(100, 250, 3),
    "wide FFN (d=64, i=1000, 1 layer)": bert_shape(64, 1000, 1),
}

# (shape, adapter r, placement, LoRA targets)
RANK_CASES = [
    ("MiniLM-L6 (d=384, i=1536, 6 layers)", 16, "pfeiffer", ("query", "value")),
    ("MiniLM-L6 (d=384, i=1536, 6 layers)", 16, "houlsby", ("query", "value")),
    ("MiniLM-L6 (d=384, i=1536, 6 layers)", 64, "pfeiffer", ("intermediate.dense",)),
    (
        "BERT-base (d=768, i=3072, 12 layers)",
        8,
        "houlsby",
        ("query", "key", "value", "attention.output.dense"),
    ),
    ("BERT-base (d=768, i=3072, 12 layers)", 48, "pfeiffer", ("intermediate.dense",)),
    ("BERT-large (d=1024, i=4096, 24 layers)", 32, "pfeiffer", ("value",)),
    (
        "toy (d=128, i=512, 2 layers)",
        4,
        "houlsby",
        ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"),
    ),
    ("toy (d=128, i=512, 2 layers)", 12, "pfeiffer", ("output.dense",)),
    ("odd (d=100, i=250, 3 layers)", 10, "houlsby", ("key", "intermediate.dense")),
    ("odd (d=100, i=250, 3 layers)", 4, "pfeiffer", ("query",)),
    ("odd (d=100, i=250, 3 layers)", 50, "pfeiffer", ("intermediate.dense",)),  # reaches it exactly
    ("wide FFN (d=64, i=1000, 1 layer)", 32, "pfeiffer", ("intermediate.dense",)),
    ("wide FFN (d=64, i=1000, 1 layer)", 16, "houlsby", ("intermediate.dense",)),  # reaches it exactly
    ("wide FFN (d=64, i=1000, 1 layer)", 8, "houlsby", ("value", "output.dense")),
]


def _rank_missing_attention_output(
    shape, adapter_r: int, placement: str, targets: Sequence[str]
) -> int | None:
    """The rank a count without `attention.output.dense` gives, where only the suffix rule (the target
    `output.dense`) catches that matrix; None where it is named itself or not caught at all."""
    targeted = targeted_linears(shape, targets)
    if "attention.output.dense" not in targeted or "attention.output.dense" in targets:
        return None
    d = shape.hidden_size
    adapter = (2 if placement == "houlsby" else 1) * (2 * d * adapter_r + d + adapter_r)
    per_rank = sum(m + k for name, (m, k) in targeted.items() if name != "attention.output.dense")
    return math.ceil(adapter / per_rank) if per_rank else None


def _lora_count(shape, r: int, targets: Sequence[str]) -> int:
    return method_parameter_count(shape, LoraConfig(r=r, target_modules=tuple(targets)))


@exercise(
    "7.matching_rank",
    kind="function",
    reference=lambda: matching_rank,
    # bert_layer_linears (the layer's Linear shapes) stays usable: the exercise is the counting
    forbidden=(counting.method_parameter_count, counting.expected_trainable_parameters, targeted_linears),
)
def grade_matching_rank(answer: Callable[..., int]) -> str:
    """The smallest rank reaching the adapter's count, counted by adapterlib.counting, on every case."""
    for shape_name, adapter_r, placement, targets in RANK_CASES:
        shape = SHAPES[shape_name]
        adapter = method_parameter_count(shape, AdapterConfig(r=adapter_r, placement=placement))
        right = matching_rank(shape, adapter_r, placement, targets)
        case = f"{shape_name}, a {placement} adapter with r={adapter_r} and LoRA on {', '.join(targets)}"
        rank = call(answer, shape, adapter_r, placement, tuple(targets), what=f"for {case}")
        whole = isinstance(rank, int) or (isinstance(rank, float) and rank.is_integer())
        if isinstance(rank, bool) or not whole or rank < 1:
            raise NotYet(
                f"for {case} your function returned {type(rank).__name__} {rank!r}; a rank is a positive whole "
                "number (an int, math.ceil(...))."
            )
        rank = int(rank)
        if rank != right and rank == _rank_missing_attention_output(shape, adapter_r, placement, targets):
            raise NotYet(
                f"for {case}: your rank is the one LoRA would need if `output.dense` wrapped the FFN's "
                "output.dense alone. A target matches every Linear whose name equals it or ends in "
                '"." + target, so `output.dense` also wraps `attention.output.dense`: count both.'
            )
        lora = _lora_count(shape, rank, targets)
        if lora < adapter:
            raise NotYet(
                f"for {case}: LoRA at your rank {rank} trains {lora:,} parameters, fewer than the adapter's "
                f"{adapter:,}. Count both sides in full (biases, sites per layer, each target's in + out) "
                "and take the first rank that reaches the adapter, not the last one below it."
            )
        if rank > 1 and _lora_count(shape, rank - 1, targets) >= adapter:
            raise NotYet(
                f"for {case}: rank {rank - 1} already trains {_lora_count(shape, rank - 1, targets):,} "
                f"parameters, at least the adapter's {adapter:,}; the answer is the smallest rank that reaches it."
            )
    return (
        f"your ranks are the smallest that reach the adapter's count on {len(RANK_CASES)} cases: "
        f"{len(SHAPES)} shapes, both placements, attention and FFN targets."
    )
