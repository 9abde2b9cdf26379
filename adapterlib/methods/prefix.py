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

One :class:`PrefixEncoder` per adapter holds the prefixes of all layers (or the MLP that makes
them). Each layer's self-attention becomes a :class:`PrefixSelfAttention` site whose add-on, a
:class:`LayerPrefix`, reaches that shared encoder and takes its own layer's slice during the
layer's forward pass. So the prefix is part of the layer's computation: it applies when the
original model object is called, and gradient checkpointing, which recomputes a layer's forward
pass, recomputes the prefix with it. (With the MLP each layer recomputes the whole MLP and
keeps its slice: a few small matrix products per layer.) The site computes attention itself,
so it does not depend on the ``past_key_values`` cache machinery of any transformers version.

Saved tensors: the encoder's, once (``shared.prefix``, or ``shared.embedding`` and
``shared.mlp.*``); the layer sites hold no tensors of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..attention import additive_mask, scaled_dot_product_attention, split_heads
from ..config import PeftConfig, check_bool, check_positive_int, check_positive_number
from ..inject import attention_implementation, hidden_size, place_like, wrap
from ..sites import AdapterSite, add_shared
from . import Method, Size, register

SELF_ATTENTION_ATTRIBUTES = ("query", "key", "value", "num_attention_heads", "dropout")


@dataclass
class PrefixTuningConfig(PeftConfig):
    """Prefix tuning: ``num_virtual_tokens`` trainable key and value vectors in every attention layer.

    With ``prefix_projection=True`` the prefixes are produced by a two-layer MLP
    (``encoder_hidden_size`` wide, default: the model's hidden size) from a smaller embedding,
    which Li & Liang (2021) found trains more stably. ``init_std``: the standard deviation of
    the random initial prefixes (or embedding).
    """

    method = "prefix"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    init_std: float = 0.02

    def validate(self) -> None:
        super().validate()
        check_positive_int("num_virtual_tokens", self.num_virtual_tokens, "A prefix is usually 5-100 tokens.")
        check_bool("prefix_projection", self.prefix_projection)
        if self.encoder_hidden_size is not None:
            check_positive_int(
                "encoder_hidden_size", self.encoder_hidden_size, "It is the MLP's hidden width."
            )
        check_positive_number(
            "init_std", self.init_std, "It is the spread of the random initial prefixes, e.g. 0.02."
        )


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
            self.mlp = nn.Sequential(
                nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, num_layers * 2 * d_model)
            )
        else:
            self.prefix = nn.Parameter(torch.randn(*self.shape) * init_std)

    def forward(self) -> torch.Tensor:
        if not hasattr(self, "mlp"):
            return self.prefix
        layers, _, n, d = self.shape
        return self.mlp(self.embedding).view(n, layers, 2, d).permute(1, 2, 0, 3)


class LayerPrefix(nn.Module):
    """One layer's view of a shared :class:`PrefixEncoder`: calling it returns ``[2, n, d]``.

    The encoder is reached, not owned (it is registered once, on the model), so a checkpoint
    names its tensors once however many layers use it.
    """

    def __init__(self, encoder: PrefixEncoder, layer_index: int) -> None:
        super().__init__()
        object.__setattr__(self, "encoder", encoder)  # a reference, not a submodule
        self.layer_index = layer_index

    def forward(self) -> torch.Tensor:
        return self.encoder()[self.layer_index]


def prefix_attention(
    projections: nn.Module,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None,
    prefix: torch.Tensor | None,
    dropout: float = 0.0,
    implementation: str = "sdpa",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Self-attention with ``[P_k; K]`` and ``[P_v; V]``, reusing ``projections.query/key/value``.

    ``prefix``: ``[2, n, d]`` (keys, values), or None for the plain attention of the layer.
    ``attention_mask``: boolean or additive, ``[batch, 1, 1 or q_len, k_len]``, or None.
    """
    heads = projections.num_attention_heads
    query = split_heads(projections.query(hidden_states), heads)  # (B, h, T, d/h)
    key = split_heads(projections.key(hidden_states), heads)  # (B, h, T, d/h)
    value = split_heads(projections.value(hidden_states), heads)  # (B, h, T, d/h)
    mask = additive_mask(attention_mask, query.dtype)  # (B, 1, 1 or T, T)
    if prefix is not None:  # (2, n, d)
        batch = hidden_states.shape[0]
        prefix = prefix.to(query.dtype)
        prefix_key = split_heads(prefix[0][None], heads).expand(batch, -1, -1, -1)  # (B, h, n, d/h)
        prefix_value = split_heads(prefix[1][None], heads).expand(batch, -1, -1, -1)  # (B, h, n, d/h)
        key = torch.cat([prefix_key, key], dim=2)  # (B, h, n + T, d/h)
        value = torch.cat([prefix_value, value], dim=2)  # (B, h, n + T, d/h)
        if mask is not None:
            visible = mask.new_zeros(*mask.shape[:-1], prefix.shape[1])  # every query sees the prefix
            mask = torch.cat([visible, mask], dim=-1)  # (B, 1, 1 or T, n + T)
    return scaled_dot_product_attention(query, key, value, mask, dropout, implementation)


class PrefixSelfAttention(AdapterSite):
    """The self-attention of a BERT-style layer, with the active adapter's prefix in front.

    Reuses the wrapped layer's ``query``/``key``/``value`` projections (frozen, or LoRA-wrapped).
    With no active prefix it calls the original attention module.
    """

    def __init__(self, base_layer: nn.Module, implementation: str = "sdpa") -> None:
        super().__init__(base_layer)
        self.implementation = implementation
        self.last_attention: torch.Tensor | None = None  # filled in eager mode, for plotting

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if self.active is None:  # another adapter is active, or none: the layer's own attention
            return self.base_layer(hidden_states, attention_mask, **kwargs)
        prefix = self.active()
        dropout = self.base_layer.dropout.p if self.training else 0.0
        output, weights = prefix_attention(
            self.base_layer, hidden_states, attention_mask, prefix, dropout, self.implementation
        )
        self.last_attention = None if weights is None else weights.detach()
        return output, weights


class PrefixTuning(Method):
    starts_at_base = False  # attention to the prefix changes every output from the start

    def added_keys(self, config: PrefixTuningConfig) -> int:
        return config.num_virtual_tokens

    def check(self, model: nn.Module, layers: list[nn.Module], config: PrefixTuningConfig) -> None:
        attention = layers[0].attention.self
        attention = attention.base_layer if isinstance(attention, PrefixSelfAttention) else attention
        missing = [a for a in SELF_ATTENTION_ATTRIBUTES if not hasattr(attention, a)]
        if missing:
            raise TypeError(
                f"prefix tuning needs self-attention modules with {', '.join(SELF_ATTENTION_ATTRIBUTES)}; "
                f"{type(attention).__name__} lacks {', '.join(missing)}."
            )

    def insert(
        self, model: nn.Module, layers: list[nn.Module], config: PrefixTuningConfig, adapter_name: str
    ) -> None:
        encoder = PrefixEncoder(
            len(layers),
            hidden_size(layers[0]),
            config.num_virtual_tokens,
            config.prefix_projection,
            config.encoder_hidden_size,
            config.init_std,
        )
        encoder = place_like(encoder, layers[0].attention.self)
        add_shared(model, adapter_name, encoder)
        implementation = attention_implementation(model)
        for index, layer in enumerate(layers):
            site = wrap(layer.attention, "self", PrefixSelfAttention)
            site.implementation = implementation
            site.add(adapter_name, LayerPrefix(encoder, index))

    def parameter_count(self, model_config: Any, config: PrefixTuningConfig) -> int:
        d, layers, n = model_config.hidden_size, model_config.num_hidden_layers, config.num_virtual_tokens
        if not config.prefix_projection:
            return layers * 2 * n * d
        h = config.encoder_hidden_size or d
        return n * d + (d * h + h) + (h * 2 * layers * d + 2 * layers * d)


register(
    PrefixTuning(
        name="prefix",
        label="prefix tuning",
        config_class=PrefixTuningConfig,
        size=Size("num_virtual_tokens", "n", grid=(20, 5, 10), explorer_max=200),
        learning_rate=1e-2,
        marker="D",
        examples=({"num_virtual_tokens": 4}, {"num_virtual_tokens": 4, "prefix_projection": True}),
    )
)
