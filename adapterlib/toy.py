"""Toy Transformer layers for teaching.

* :class:`Adapter` and :class:`ToyTransformerLayer` follow the original tutorial: a bias-free
  bottleneck with a residual, placed after a ``Linear + ReLU`` feed-forward block. Inputs are
  ``[seq_len, batch, d_model]`` (``nn.MultiheadAttention``'s default layout).
* :class:`TransformerLayer` is a complete post-LayerNorm encoder layer laid out exactly like a
  Hugging Face ``BertLayer`` (``attention.self.query``, ``attention.output.dense``,
  ``intermediate.dense``, ``output.dense``...), so every adapterlib method inserts into it the
  same way it inserts into BERT. Inputs are ``[batch, seq_len, d_model]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import padding_mask, scaled_dot_product_attention, split_heads


class Adapter(nn.Module):
    """The tutorial's adapter: ``x + up(relu(down(x)))``, no biases."""

    def __init__(self, d_model: int, r: int = 16) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, r, bias=False)
        self.act = nn.ReLU()
        self.up = nn.Linear(r, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.act(self.down(x)))


class ToyTransformerLayer(nn.Module):
    """The tutorial's layer: attention + residual, a ``Linear + ReLU`` FFN, then the adapter."""

    def __init__(self, d_model: int = 128, adapter_r: int = 16) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, num_heads=4)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_model), nn.ReLU())
        self.adapter = Adapter(d_model, r=adapter_r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn_out, _ = self.self_attn(x, x, x)
        x = x + attn_out
        x = self.ffn(x)
        return self.adapter(x)


@dataclass
class ToyConfig:
    """The shape of a :class:`TransformerLayer`, with BERT's config field names."""

    hidden_size: int = 128
    num_attention_heads: int = 4
    intermediate_size: int = 512
    num_hidden_layers: int = 1
    hidden_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12


class SelfAttention(nn.Module):
    """Multi-head self-attention with BERT's names: ``query``, ``key``, ``value``."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        d = config.hidden_size
        if d % config.num_attention_heads:
            raise ValueError(
                f"hidden_size {d} is not divisible by num_attention_heads {config.num_attention_heads}."
            )
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = d // config.num_attention_heads
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        q, k, v = (
            split_heads(proj(hidden_states), self.num_attention_heads)
            for proj in (self.query, self.key, self.value)
        )
        dropout = self.dropout.p if self.training else 0.0
        return scaled_dot_product_attention(q, k, v, attention_mask, dropout, implementation="eager")


class ResidualLayerNorm(nn.Module):
    """``LayerNorm(x + dropout(dense(h)))``: a sub-layer's output projection, residual and norm."""

    def __init__(self, d_in: int, d_out: int, config: ToyConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(d_out, eps=config.layer_norm_eps)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(x + self.dropout(self.dense(h)))


class Attention(nn.Module):
    """Self-attention followed by its output projection, residual and LayerNorm."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.self = SelfAttention(config)
        self.output = ResidualLayerNorm(config.hidden_size, config.hidden_size, config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        context, _ = self.self(x, mask)
        return self.output(context, x)


class Intermediate(nn.Module):
    """The FFN's expansion ``gelu(dense(x))`` to ``intermediate_size``."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class TransformerLayer(nn.Module):
    """A post-LN encoder layer: ``LN(x + Attn(x))`` then ``LN(a + FFN(a))``, named as in BERT."""

    def __init__(
        self, d_model: int = 128, num_heads: int = 4, d_ff: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.config = ToyConfig(d_model, num_heads, d_ff or 4 * d_model, 1, dropout)
        self.attention = Attention(self.config)
        self.intermediate = Intermediate(self.config)
        self.output = ResidualLayerNorm(self.config.intermediate_size, d_model, self.config)

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``hidden_states``: ``[batch, seq, d_model]``; ``attention_mask``: ``[batch, seq]``, 1 = real token."""
        mask = padding_mask(attention_mask, hidden_states.dtype)
        a = self.attention(hidden_states, mask)
        return self.output(self.intermediate(a), a)
