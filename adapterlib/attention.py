r"""Scaled dot-product attention, written out once and shared by the toy layer and prefix tuning.

.. math::  \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_h}} + M\right) V

:math:`M` is an additive mask: 0 where a query may look, a very negative number where it may not
(padding). Hugging Face BERT hands its attention layers either such a float mask (``eager``),
a boolean mask (``sdpa``, True = may look) or None (no padding); :func:`additive_mask` turns
all three into the float form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("eager", "sdpa")


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a boolean (True = visible) or additive float mask into an additive float mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        blocked = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return blocked.masked_fill(~mask, torch.finfo(dtype).min)
    return mask.to(dtype)


def padding_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A ``[batch, seq]`` 1/0 padding mask as an additive ``[batch, 1, 1, seq]`` mask."""
    if attention_mask is None:
        return None
    return additive_mask(attention_mask.bool()[:, None, None, :], dtype)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[batch, seq, heads * head_dim]`` -> ``[batch, heads, seq, head_dim]``."""
    return x.view(*x.shape[:-1], num_heads, x.shape[-1] // num_heads).transpose(1, 2)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    dropout: float = 0.0,
    implementation: str = "sdpa",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention over ``[batch, heads, seq, head_dim]`` tensors with an additive mask.

    ``eager`` computes the softmax explicitly and also returns the attention weights
    ``[batch, heads, q_len, k_len]``; ``sdpa`` calls PyTorch's fused kernel and returns None for them.
    The output is ``[batch, q_len, heads * head_dim]``.
    """
    if implementation == "eager":
        scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
        if mask is not None:
            scores = scores + mask
        weights = scores.softmax(dim=-1)
        context = F.dropout(weights, p=dropout) @ value
    else:
        weights = None
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout)
    batch, heads, q_len, head_dim = context.shape
    return context.transpose(1, 2).reshape(batch, q_len, heads * head_dim), weights
