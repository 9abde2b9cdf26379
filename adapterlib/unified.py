r"""Every method as a change to a hidden state (He et al., 2022, "Towards a Unified View of
Parameter-Efficient Transfer Learning").

Each PEFT method leaves the base model frozen and adds a change :math:`\Delta h` to one of its
hidden states :math:`h`:

.. math::  h \leftarrow h + \Delta h

The methods differ in what :math:`\Delta h` reads (the input :math:`x` of the sub-layer or of the
weight, the hidden state :math:`h` itself, or nothing), in its function, in which hidden state it
is added to, and in how it is scaled. Two kinds of code live here:

* measuring :math:`\Delta h` from the package's modules: :func:`record_call` keeps the arguments a
  site was called with in one forward pass, and :func:`measured_delta_h` calls the site again on
  them, with the adapter active and disabled, and returns the difference;
* each method's formula for :math:`\Delta h`, computed from its tensors (``*_delta`` below), so
  that the two can be compared.

Per-head tensors are ``[batch, heads, seq, d_h]``; a 1/0 ``attention_mask`` is ``[batch, seq]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .attention import split_heads

# ---------------------------------------------------------------- measuring


@dataclass
class SiteCall:
    """The positional and keyword arguments one site was called with."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


def record_call(model: nn.Module, site: nn.Module, *inputs: Any, **named_inputs: Any) -> SiteCall:
    """Run ``model(*inputs, **named_inputs)`` once and return what ``site`` was first called with."""
    calls: list[SiteCall] = []
    handle = site.register_forward_pre_hook(
        lambda _, args, kwargs: calls.append(SiteCall(args, kwargs)), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(*inputs, **named_inputs)
    finally:
        handle.remove()
    if not calls:
        raise ValueError(f"the model never called this {type(site).__name__}.")
    return calls[0]


def hidden_state(site: nn.Module, call: SiteCall, at: nn.Module | None = None) -> torch.Tensor:
    """Call ``site`` on ``call`` and return its output (the first element of a tuple), or, with
    ``at``, the input that ``site`` hands to its inner module ``at``."""
    inputs: list[torch.Tensor] = []
    handle = None if at is None else at.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    try:
        with torch.no_grad():
            output = site(*call.args, **call.kwargs)
    finally:
        if handle is not None:
            handle.remove()
    if at is not None:
        return inputs[0]
    return output[0] if isinstance(output, tuple) else output


def measured_delta_h(
    model: nn.Module, site: nn.Module, call: SiteCall, at: nn.Module | None = None
) -> torch.Tensor:
    r""":math:`\Delta h = h_{\text{adapter active}} - h_{\text{adapter disabled}}`, with the site's
    inputs held fixed (``model`` is the :class:`~adapterlib.PeftModel`; ``at`` as in :func:`hidden_state`)."""
    adapted = hidden_state(site, call, at)
    with model.disable_adapter():
        base = hidden_state(site, call, at)
    return adapted - base


def token_spread(delta_h: torch.Tensor, attention_mask: torch.Tensor) -> float:
    r"""The largest difference between the :math:`\Delta h` of two real tokens, over every sentence
    of the batch: 0 where every token gets the same change. ``delta_h``: ``[batch, seq, features]``."""
    changes = delta_h[attention_mask.bool()]
    return (changes - changes[0]).abs().max().item()


@torch.no_grad()
def perturb(model: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    r"""Move every trainable tensor by Gaussian noise, as training would: by ``std`` times the
    tensor's root mean square, or by ``std`` itself where the tensor is all zeros.

    Most methods start at :math:`\Delta h = 0` (LoRA's ``B``, an adapter's ``W_up``, (IA)³'s
    ``l = 1``, BitFit's :math:`\Delta b`, DoRA's :math:`m = \lVert W \rVert`), where a formula could
    not fail. Noise relative to the tensor's size keeps, e.g., DoRA's magnitudes positive."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        if parameter.requires_grad:
            size = parameter.float().square().mean().sqrt().item() or 1.0
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(std * size * noise.to(parameter.device, parameter.dtype))
    return model


# ---------------------------------------------------------------- the rows' formulas


def lora_delta(x: torch.Tensor, A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    r"""LoRA: :math:`\Delta h = s\, B A x` added to the output of :math:`W`, with :math:`s = \alpha / r`.

    Reads the input :math:`x` of the weight; linear in :math:`x` and in each of :math:`A`, :math:`B`."""
    return scaling * (x @ A.T @ B.T)


def bottleneck_delta(
    h: torch.Tensor,
    down_weight: torch.Tensor,
    down_bias: torch.Tensor | None,
    up_weight: torch.Tensor,
    up_bias: torch.Tensor | None,
    scaling: float,
    activation: Callable[[torch.Tensor], torch.Tensor] = torch.relu,
) -> torch.Tensor:
    r"""A bottleneck: :math:`\Delta h = s\,\bigl(W_{up}\,\sigma(W_{down} h + b_{down}) + b_{up}\bigr)`.

    The sequential adapter applies it to the hidden state it changes (the sub-layer's output
    :math:`h`); the parallel adapter to the sub-layer's input :math:`x`."""
    down = h @ down_weight.T + (0 if down_bias is None else down_bias)
    up = activation(down) @ up_weight.T + (0 if up_bias is None else up_bias)
    return scaling * up


def ia3_delta(h: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741 (the paper's l)
    r"""(IA)³: :math:`h \leftarrow l \odot h`, i.e. :math:`\Delta h = (l - 1) \odot h`: it reads the
    hidden state it changes."""
    return (l - 1) * h


def bitfit_delta(delta_bias: torch.Tensor) -> torch.Tensor:
    r"""BitFit: :math:`\Delta h = \Delta b`, the same vector for every token: it reads nothing."""
    return delta_bias


def dora_delta(
    x: torch.Tensor,
    weight: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    magnitude: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    r"""DoRA: :math:`\Delta h = (W' - W)\,x` with

    .. math::  W' = \frac{m}{n} \odot (W + s B A), \qquad n = \lVert W + s B A \rVert_{\mathrm{row}}

    (one norm and one magnitude per output feature, i.e. per row of :math:`W`). Equivalently
    :math:`\Delta h = (m/n - 1) \odot W x + (m/n) \odot s B A x`: a rescaling of the frozen output
    plus a rescaled LoRA term, where :math:`n` depends on :math:`B A`, so for a fixed :math:`A`,
    :math:`\Delta h` is not linear in :math:`B` (LoRA's is).

    The DoRA paper writes the norm column-wise because its :math:`W` has one column per output
    feature; ``nn.Linear`` keeps one row per output feature, so here, as in peft, it is taken per row."""
    direction = weight + scaling * (B @ A)
    gain = magnitude / torch.linalg.vector_norm(direction, dim=1)
    return x @ (gain[:, None] * direction - weight).T


def attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    r""":math:`\mathrm{softmax}(q K^\top / \sqrt{d_h})\, V` per head; keys where the 1/0 mask is 0 get no weight.

    ``key`` and ``value`` may be ``[heads, n, d_h]`` (a prefix, the same for every sentence)."""
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask.bool()[:, None, None, :], float("-inf"))
    return scores.softmax(dim=-1) @ value


def attention_with_prefix(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    r""":math:`\mathrm{Attn}([P_k; K], [P_v; V])`: each query attends to the ``n`` prefix positions
    (always visible) and to the real tokens, in one softmax, as prefix tuning's layers compute it.

    ``prefix_key``, ``prefix_value``: ``[heads, n, d_h]``, the same for every sentence."""
    batch, n = query.shape[0], prefix_key.shape[1]
    keys = torch.cat([prefix_key.expand(batch, -1, -1, -1), key], dim=2)  # (B, h, n + T, d_h)
    values = torch.cat([prefix_value.expand(batch, -1, -1, -1), value], dim=2)  # (B, h, n + T, d_h)
    visible = torch.cat([attention_mask.new_ones(batch, n), attention_mask], dim=1)  # (B, n + T)
    return attention(query, keys, values, visible)


def prefix_gate(
    query: torch.Tensor, key: torch.Tensor, prefix_key: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    r"""The prefix's share of each query's attention, ``[batch, heads, seq, 1]``:

    .. math::  \lambda(x) = \frac{\sum_i \exp(q \cdot P_{k,i} / \sqrt{d_h})}
               {\sum_i \exp(q \cdot P_{k,i} / \sqrt{d_h}) + \sum_j \exp(q \cdot k_j / \sqrt{d_h})}

    with :math:`i` over the prefix positions and :math:`j` over the real (unpadded) tokens.
    ``prefix_key``: ``[heads, n, d_h]``. Computed with log-sum-exp, so large scores do not overflow."""
    scale = math.sqrt(query.shape[-1])
    prefix_scores = query @ prefix_key.transpose(-1, -2) / scale
    token_scores = (query @ key.transpose(-1, -2) / scale).masked_fill(
        ~attention_mask.bool()[:, None, None, :], float("-inf")
    )
    prefix_total = prefix_scores.logsumexp(dim=-1, keepdim=True)
    everything = torch.cat([prefix_scores, token_scores], dim=-1).logsumexp(dim=-1, keepdim=True)
    return (prefix_total - everything).exp()


def equal_score_share(num_virtual_tokens: int, attention_mask: torch.Tensor) -> torch.Tensor:
    r""":math:`\lambda` when every score is equal: every weight is :math:`e^0 = 1`, so
    :math:`\lambda = n / (n + T)` with :math:`T` the real tokens of each sentence.
    ``[batch, 1, 1, 1]``, to compare with :func:`prefix_gate`'s ``[batch, heads, seq, 1]``."""
    n, real_tokens = num_virtual_tokens, attention_mask.sum(dim=1).float()
    return (n / (n + real_tokens))[:, None, None, None]


def prefix_delta(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    prefix_key: torch.Tensor,
    prefix_value: torch.Tensor,
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    r"""Prefix tuning as a gated change of each head's output (He et al., section 3.1):

    .. math::  \mathrm{Attn}([P_k; K], [P_v; V])
               = (1 - \lambda)\, \mathrm{Attn}(K, V) + \lambda\, \mathrm{Attn}(P_k, P_v),
               \qquad \Delta h = \lambda(x)\, \bigl(\mathrm{Attn}(P_k, P_v) - \mathrm{Attn}(K, V)\bigr)

    since the softmax over all keys splits into the softmax over the prefix, weighted by its share
    :math:`\lambda` (:func:`prefix_gate`), and the softmax over the tokens, weighted by :math:`1 - \lambda`."""
    gate = prefix_gate(query, key, prefix_key, attention_mask)
    return gate * (attention(query, prefix_key, prefix_value) - attention(query, key, value, attention_mask))


# ---------------------------------------------------------------- prefix tuning's per-head tensors


def prefix_parts(site: nn.Module, hidden_states: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-head ``query``, ``key``, ``value`` of a :class:`~adapterlib.PrefixSelfAttention`'s frozen
    projections on ``hidden_states``, and its active prefix as ``prefix_key``, ``prefix_value`` ``[heads, n, d_h]``."""
    frozen = site.base_layer
    heads = frozen.num_attention_heads
    with torch.no_grad():
        prefix = site.active()
        parts = {
            name: split_heads(getattr(frozen, name)(hidden_states), heads)
            for name in ("query", "key", "value")
        }
        parts["prefix_key"] = split_heads(prefix[0][None], heads)[0]
        parts["prefix_value"] = split_heads(prefix[1][None], heads)[0]
    return parts


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[batch, heads, seq, d_h]`` -> ``[batch, seq, heads * d_h]``: the heads side by side,
    as a layer outputs them."""
    batch, heads, seq, d_h = x.shape
    return x.transpose(1, 2).reshape(batch, seq, heads * d_h)
