r"""Prefix tuning (Li & Liang, 2021): trainable keys and values in front of every attention layer.

For each layer :math:`l`, ``n`` virtual tokens add a key prefix :math:`P_k^{(l)}` and a value prefix
:math:`P_v^{(l)}` (each :math:`n \times d`, split over the heads like real keys and values):

.. math::  K' = [P_k; K], \qquad V' = [P_v; V], \qquad
           \mathrm{head} = \mathrm{softmax}\!\left(\frac{Q K'^\top}{\sqrt{d_h}} + [0; M]\right) V'

Every real token may attend to every prefix position; padded tokens stay masked. The prefixes
cost ``layers * 2 * n * d`` parameters: they grow with depth and width, not only with ``n``.
With ``prefix_projection`` they are computed by an MLP from an ``n x d`` embedding
(``n*d + d*h + h + h*layers*2*d + layers*2*d`` parameters), which only matters for training:
after training the MLP's output could be stored instead.

:class:`PrefixSelfAttention` owns the attention computation of the layer it wraps, so it does
not depend on the ``past_key_values`` cache machinery of any transformers version.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import additive_mask, scaled_dot_product_attention, split_heads


class PrefixEncoder(nn.Module):
    """Holds the prefixes of all layers; calling it returns them as ``[layers, 2, n, d]``."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_virtual_tokens: int,
        prefix_projection: bool = False,
        encoder_hidden_size: int | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.shape = (num_layers, 2, num_virtual_tokens, d_model)
        if prefix_projection:
            hidden = encoder_hidden_size or d_model
            self.embedding = nn.Parameter(torch.randn(num_virtual_tokens, d_model) * init_std)
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, num_layers * 2 * d_model))
        else:
            self.prefix = nn.Parameter(torch.randn(*self.shape) * init_std)

    def forward(self) -> torch.Tensor:
        if not hasattr(self, "mlp"):
            return self.prefix
        layers, _, n, d = self.shape
        return self.mlp(self.embedding).view(n, layers, 2, d).permute(1, 2, 0, 3)


class PrefixSelfAttention(nn.Module):
    """Self-attention of a BERT-style layer with ``[P_k; K]`` and ``[P_v; V]``.

    Reuses the wrapped layer's ``query``/``key``/``value`` projections (frozen, or LoRA-wrapped).
    ``prefix`` (``[2, n, d]``) is set by :class:`adapterlib.PeftModel` for the length of one
    forward pass; with no prefix set the layer computes exactly the original attention.
    """

    def __init__(self, base_layer: nn.Module, implementation: str = "sdpa") -> None:
        super().__init__()
        self.base_layer = base_layer
        self.num_heads = base_layer.num_attention_heads
        self.implementation = implementation
        self.prefix: torch.Tensor | None = None
        self.last_attention: torch.Tensor | None = None  # filled in eager mode, for plotting

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        base = self.base_layer
        query = split_heads(base.query(hidden_states), self.num_heads)
        key = split_heads(base.key(hidden_states), self.num_heads)
        value = split_heads(base.value(hidden_states), self.num_heads)
        mask = additive_mask(attention_mask, query.dtype)
        if self.prefix is not None:
            batch = hidden_states.shape[0]
            prefix = self.prefix.to(query.dtype)
            prefix_key = split_heads(prefix[0][None], self.num_heads).expand(batch, -1, -1, -1)
            prefix_value = split_heads(prefix[1][None], self.num_heads).expand(batch, -1, -1, -1)
            key = torch.cat([prefix_key, key], dim=2)
            value = torch.cat([prefix_value, value], dim=2)
            if mask is not None:
                visible = mask.new_zeros(*mask.shape[:-1], prefix.shape[1])
                mask = torch.cat([visible, mask], dim=-1)
        dropout = base.dropout.p if self.training else 0.0
        output, weights = scaled_dot_product_attention(query, key, value, mask, dropout, self.implementation)
        self.last_attention = None if weights is None else weights.detach()
        return output, weights
