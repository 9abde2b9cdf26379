r"""Exercises of notebook 5 (prefix tuning): graders and the package's versions of the answers.

* ``5.prefix_attention``: attention with ``[P_k; K]``, ``[P_v; V]`` and the mask extended over the
  prefix, compared with :class:`adapterlib.PrefixSelfAttention` on random padded batches;
* ``5.prefix_params``: the number of prefix parameters of MiniLM-L6 with ``n = 10``;
* ``5.prefix_mlp``: the reparameterisation MLP, compared with :class:`adapterlib.PrefixEncoder`
  (``prefix_projection=True``) holding the same weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import unified
from ..attention import padding_mask
from ..counting import method_parameter_count
from ..methods import prefix as prefix_method
from ..methods.prefix import PrefixEncoder, PrefixTuningConfig
from ..methods.prefix import prefix_attention as layer_prefix_attention
from . import NotYet, exercise
from .contract import describe_error, nonfinite, plain_result

MINILM = SimpleNamespace(hidden_size=384, num_hidden_layers=6, num_attention_heads=12)
TOLERANCE = 1e-5


# --------------------------------------------------------------------------- 5.prefix_attention


prefix_attention = unified.attention_with_prefix  # the reference: Attn([P_k; K], [P_v; V]) in one softmax


class Projections(nn.Module):
    """The parts of a BERT self-attention layer that :class:`PrefixSelfAttention` reuses."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.num_attention_heads = num_heads
        self.dropout = nn.Dropout(0.0)


def attention_case(
    batch: int, heads: int, seq: int, d_h: int, n: int, lengths: list[int], seed: int
) -> dict[str, Any]:
    """Random per-head inputs and the package's prefix attention on them, padded rows included."""
    generator = torch.Generator().manual_seed(seed)
    d_model = heads * d_h
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        base = Projections(d_model, heads).eval()
    hidden = torch.randn(batch, seq, d_model, generator=generator)
    prefix = torch.randn(2, n, d_model, generator=generator)
    mask = torch.zeros(batch, seq, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    with torch.no_grad():
        expected = layer_prefix_attention(
            base, hidden, padding_mask(mask, hidden.dtype), prefix, implementation="eager"
        )[0]
        split = lambda x: x.view(*x.shape[:-1], heads, d_h).transpose(-3, -2)
        return {
            "inputs": (
                split(base.query(hidden)),
                split(base.key(hidden)),
                split(base.value(hidden)),
                split(prefix[0]),
                split(prefix[1]),
                mask,
            ),
            "expected": expected.view(batch, seq, heads, d_h).transpose(1, 2),
        }


ATTENTION_CASES = [
    dict(batch=2, heads=4, seq=6, d_h=8, n=3, lengths=[6, 3], seed=0),
    dict(batch=3, heads=2, seq=5, d_h=4, n=1, lengths=[2, 5, 4], seed=1),
    dict(batch=1, heads=3, seq=4, d_h=16, n=5, lengths=[4], seed=2),
]


def other_attention(inputs, scale: float, prefix: bool = True, padding: bool = True) -> torch.Tensor:
    """A variant of prefix attention (another scale, no prefix, padding visible), for diagnosing mistakes."""
    query, key, value, prefix_key, prefix_value, mask = inputs
    batch, n = query.shape[0], prefix_key.shape[1]
    if not padding:
        mask = torch.ones_like(mask)
    if prefix:
        key = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2)
        mask = torch.cat([mask.new_ones(batch, n), mask], dim=1)
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask.bool()[:, None, None, :], scale=scale
    )


def call_attention(function: Callable, inputs, shapes: str) -> torch.Tensor:
    """The learner's function on copies of ``inputs``; a failure or a wrong type is named, not solved."""
    try:
        with torch.no_grad():
            output = function(*(x.clone() for x in inputs))
    except (NotImplementedError, NotYet, AssertionError):
        raise
    except Exception as error:  # the learner's code failed: say where, not what to write
        raise NotYet(
            f"on {shapes} your function raised {describe_error(error)}. Every tensor that is combined "
            "with the scores (the mask too) must cover the n prefix positions plus the seq real ones."
        ) from None
    plain_result(output, f"on {shapes}")
    if isinstance(output, tuple):
        raise NotYet("your function returned a tuple; return only the attention output tensor.")
    if not isinstance(output, torch.Tensor):
        raise NotYet(f"your function returned a {type(output).__name__}, not a tensor.")
    if output.dtype != inputs[0].dtype:
        raise NotYet(
            f"your function returned {output.dtype} for {inputs[0].dtype} inputs; keep the inputs' dtype."
        )
    return output


def diagnose_attention(function: Callable, case: dict[str, Any], output: torch.Tensor, shapes: str) -> str:
    """Name the behaviour that differs from the package's prefix attention."""
    inputs = case["inputs"]
    query, key, value, prefix_key, prefix_value, mask = inputs
    d_h = query.shape[-1]
    broken = nonfinite(output)
    if broken:
        return (
            f"on {shapes} your output has {broken}. A softmax over entries that are all -inf gives 0/0 = NaN: "
            "the mask hides keys, so take the softmax over the keys (the last axis, dim=-1); over another axis a "
            "whole masked column of padding becomes NaN. Mask with -inf (or a large negative number) where the "
            "mask is 0, never where it is 1."
        )
    moved = list(inputs)
    moved[4] = prefix_value + 10.0
    if torch.allclose(call_attention(function, moved, shapes), output, atol=TOLERANCE):
        return (
            "changing P_v by 10 did not change your output at all: the prefix positions get no attention. "
            "The extended mask must mark every prefix position as visible."
        )
    if not mask.all():
        moved = list(inputs)
        moved[2] = value.masked_fill(~mask.bool()[:, None, :, None], 10.0)
        change = (call_attention(function, moved, shapes) - output).abs().max().item()
        if change > TOLERANCE:
            return (
                f"changing the values at padded positions changed your output by up to {change:.3g}: "
                "padded keys must stay masked, for every query."
            )
    for scale, says in (
        (1 / math.sqrt(query.shape[1] * d_h), "sqrt(heads * d_h), the model's width d"),
        (1.0, "1 (no scaling)"),
        (1 / d_h, "d_h instead of its square root"),
    ):
        if torch.allclose(output, other_attention(inputs, scale), atol=TOLERANCE):
            return f"your scores are divided by {says}; one head's scores are divided by sqrt(d_h), its own width."
    if torch.allclose(output, other_attention(inputs, 1 / math.sqrt(d_h), prefix=False), atol=TOLERANCE):
        return (
            "your output equals attention without the prefix: prepend P_k to the keys and P_v to the values."
        )
    real_rows = mask.bool()[:, None, :, None].expand_as(output)
    error = (output - case["expected"]).abs()
    if error[real_rows].max() <= TOLERANCE:
        return (
            f"your output is right for real tokens but differs by up to {error.max().item():.3g} at padded query "
            "rows: the mask hides keys (columns); every query row, padded or not, still attends to the visible keys."
        )
    return f"on {shapes} your output differs from the package's prefix attention by up to {error.max().item():.3g}."


@exercise(
    "5.prefix_attention",
    kind="function",
    reference=lambda: prefix_attention,
    forbidden=(layer_prefix_attention, other_attention),
)
def grade_prefix_attention(function: Callable) -> str:
    for shape in ATTENTION_CASES:
        case = attention_case(**shape)
        query, prefix_key = case["inputs"][0], case["inputs"][3]
        batch, heads, seq, d_h = query.shape
        n = prefix_key.shape[1]
        shapes = f"batch={batch}, heads={heads}, seq={seq}, d_h={d_h}, n={n}"
        expected = case["expected"]
        output = call_attention(function, case["inputs"], shapes)
        if output.shape != query.shape:
            if output.dim() == 4 and output.shape[2] == n + seq:
                raise NotYet(
                    f"on {shapes} your output has n + seq = {n + seq} rows per head: the prefix goes in front "
                    "of the keys and values only; the queries stay one per real token."
                )
            raise NotYet(
                f"on {shapes} your output has shape {tuple(output.shape)}; it should have the queries' shape "
                f"{tuple(query.shape)}: one d_h-vector per query and head."
            )
        if not torch.allclose(output, expected, atol=TOLERANCE):
            raise NotYet(diagnose_attention(function, case, output, shapes))
    return (
        f"equals the package's PrefixSelfAttention on {len(ATTENTION_CASES)} random padded batches "
        "(padded query rows included, prefix lengths 1 to 5)."
    )


# --------------------------------------------------------------------------- 5.prefix_params


@exercise("5.prefix_params", kind="number")
def grade_prefix_params(answer: Any) -> str:
    expected = method_parameter_count(MINILM, PrefixTuningConfig(num_virtual_tokens=10))
    if answer == expected:
        return (
            f"{int(answer):,} parameters: a key and a value vector of width d per virtual token, "
            "in each of 6 layers."
        )
    d, layers = MINILM.hidden_size, MINILM.num_hidden_layers
    if answer * 2 == expected:
        raise NotYet(
            f"{answer:,} counts only half: each virtual token has a key vector and a value vector as well."
        )
    if answer * layers == expected:
        raise NotYet(f"{answer:,} is the prefix of one layer; every attention layer has its own prefix.")
    if answer * layers == expected * 12:
        raise NotYet(f"{answer:,} counts 12 layers (BERT-base); MiniLM-L6 has {layers}.")
    if answer * MINILM.num_attention_heads == expected:
        raise NotYet(
            f"{answer:,} is 1/{MINILM.num_attention_heads} of the count. Two mistakes give this number on "
            f"MiniLM: using the head width d_h where a prefix vector spans all heads (width d = {d}), or "
            "counting one n x d matrix, without the layers and without the key/value pair."
        )
    head = d * 2 + 2
    if answer - head == expected:
        raise NotYet(
            f"{answer:,} includes the classifier head ({head:,} parameters); the question asks for the "
            "prefix alone."
        )
    raise NotYet(
        f"{answer:,} is not the count; count the numbers one virtual token adds to one layer, then scale up."
    )


# --------------------------------------------------------------------------- 5.prefix_mlp


class PrefixMLP(nn.Module):
    r"""Li & Liang's reparameterisation: all layers' prefixes from one small embedding.

    ``P = MLP(E)`` with ``E`` (``embedding``) of shape ``[n, d]`` and
    ``mlp = Linear(d, h) -> tanh -> Linear(h, L * 2 * d)``; row ``i`` of the MLP's output holds,
    in this order, layer 0's key and value of virtual token ``i``, then layer 1's, and so on.
    ``forward()`` returns the prefixes as ``[L, 2, n, d]``.
    """

    def __init__(
        self, num_layers: int, d_model: int, num_virtual_tokens: int, hidden: int, init_std: float = 0.02
    ) -> None:
        super().__init__()
        self.shape = (num_layers, 2, num_virtual_tokens, d_model)
        self.embedding = nn.Parameter(torch.randn(num_virtual_tokens, d_model) * init_std)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, num_layers * 2 * d_model)
        )

    def forward(self) -> torch.Tensor:
        layers, _, n, d = self.shape
        return self.mlp(self.embedding).view(n, layers, 2, d).permute(1, 2, 0, 3)


MLP_CASES = [
    dict(num_layers=2, d_model=8, num_virtual_tokens=3, hidden=5),
    dict(num_layers=3, d_model=4, num_virtual_tokens=2, hidden=6),
    dict(num_layers=1, d_model=6, num_virtual_tokens=4, hidden=3),
]


def build_learner_mlp(module_class: type, sizes: dict[str, int], described: str) -> nn.Module:
    try:
        module = module_class(
            sizes["num_layers"], sizes["d_model"], sizes["num_virtual_tokens"], sizes["hidden"]
        )
    except (NotImplementedError, NotYet, AssertionError):
        raise
    except Exception as error:
        raise NotYet(f"{module_class.__name__}({described}) raised {describe_error(error)}.") from None
    if not isinstance(module, nn.Module):
        raise NotYet(f"{module_class.__name__}(...) is a {type(module).__name__}, not an nn.Module.")
    return module


def run_learner_mlp(module: nn.Module, described: str) -> torch.Tensor:
    try:
        return module()
    except (NotImplementedError, NotYet, AssertionError):
        raise
    except Exception as error:
        raise NotYet(
            f"forward() of the module built with {described} raised {describe_error(error)}."
        ) from None


def diagnose_mlp(module: nn.Module, output: torch.Tensor, expected: torch.Tensor, described: str) -> str:
    """Name what differs: tokens mixed by the reshape, or features taken in the wrong order."""
    with torch.no_grad():
        module.embedding[0] += 1.0
        changed = (run_learner_mlp(module, described) - output).abs().amax(dim=(0, 1, 3)) > TOLERANCE
        module.embedding[0] -= 1.0
    if changed[1:].any():
        return (
            "changing virtual token 0's embedding changed the prefix of other virtual tokens: the reshape mixes "
            "tokens. The MLP's output is [n, L*2*d]: split each row into (L, 2, d) first, then move n into place."
        )
    wrong = [
        (layer, part)
        for layer in range(expected.shape[0])
        for part in range(2)
        if not torch.allclose(output[layer, part], expected[layer, part], atol=TOLERANCE)
    ]
    layer, part = wrong[0]
    return (
        f"with {described}, out[{layer}, {part}] (layer {layer}'s {('keys', 'values')[part]}) is not the part of the "
        "MLP's output it should be: each output row holds layer 0's key, layer 0's value, layer 1's key, ..., "
        "each d wide, in that order."
    )


@exercise("5.prefix_mlp", kind="class", reference=lambda: PrefixMLP, forbidden=(prefix_method,))
def grade_prefix_mlp(module_class: type) -> str:
    for sizes in MLP_CASES:
        layers, d, n, h = (sizes[k] for k in ("num_layers", "d_model", "num_virtual_tokens", "hidden"))
        described = f"L={layers}, d={d}, n={n}, h={h}"
        with torch.random.fork_rng():
            torch.manual_seed(0)
            module = build_learner_mlp(module_class, sizes, described)
        names = sorted(name for name, _ in module.named_parameters())
        if not isinstance(getattr(module, "embedding", None), nn.Parameter):
            raise NotYet("the module has no nn.Parameter named `embedding` (the n x d matrix E).")
        mlp = getattr(module, "mlp", None)
        if not isinstance(mlp, nn.Sequential):
            raise NotYet("the module has no nn.Sequential named `mlp`.")
        if not any(isinstance(layer, nn.Tanh) for layer in mlp):
            raise NotYet(
                "your `mlp` has no tanh: without it the two Linear layers collapse into one linear map."
            )
        if names != ["embedding", "mlp.0.bias", "mlp.0.weight", "mlp.2.bias", "mlp.2.weight"]:
            raise NotYet(
                f"your module's parameters are {names}; it should hold `embedding` and "
                "`mlp = nn.Sequential(nn.Linear, nn.Tanh(), nn.Linear)` (with biases), nothing else."
            )
        count = sum(p.numel() for p in module.parameters())
        closed_form = method_parameter_count(
            SimpleNamespace(hidden_size=d, num_hidden_layers=layers),
            PrefixTuningConfig(num_virtual_tokens=n, prefix_projection=True, encoder_hidden_size=h),
        )
        if count != closed_form:
            shapes = ", ".join(f"{name} {tuple(p.shape)}" for name, p in module.named_parameters())
            raise NotYet(
                f"with {described} your module has {count} parameters ({shapes}), which is not "
                "n d + (d h + h) + (h 2Ld + 2Ld): check the widths of E and of the two Linear layers."
            )
        output = run_learner_mlp(module, described)
        if not isinstance(output, torch.Tensor) or output.shape != (layers, 2, n, d):
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise NotYet(
                f"with {described} forward() returned {shape}; it should be [L, 2, n, d] = {(layers, 2, n, d)}."
            )
        package = PrefixEncoder(layers, d, n, prefix_projection=True, encoder_hidden_size=h)
        package.load_state_dict(module.state_dict())
        expected = package()
        if not torch.allclose(output, expected, atol=TOLERANCE):
            raise NotYet(diagnose_mlp(module, output.detach(), expected.detach(), described))
        output.sum().backward()
        if any(p.grad is None for p in module.parameters()):
            raise NotYet(
                "the output is not differentiable with respect to every parameter (is something detached?)."
            )
    return (
        f"same prefixes as the package's PrefixEncoder with the same weights, for {len(MLP_CASES)} sizes; "
        "parameter count n d + (d h + h) + (h 2Ld + 2Ld)."
    )
