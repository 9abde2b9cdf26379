r"""The parallel adapter (He et al., 2022, "Towards a Unified View of Parameter-Efficient Transfer Learning").

A bottleneck beside the feed-forward block (FFN) of every layer: it reads what the FFN reads, the
attention block's output :math:`x`, and its output joins the FFN's before the residual sum and
the LayerNorm of BERT's post-LayerNorm layer:

.. math::  h = \mathrm{LN}\big(x + \mathrm{FFN}(x) + \Delta h\big), \qquad
           \Delta h = s \, W_{up}\, \sigma(W_{down}\, \mathrm{dropout}(x) + b_{down}) + s\, b_{up}

with :math:`W_{down} \in \mathbb{R}^{r \times d}`, :math:`W_{up} \in \mathbb{R}^{d \times r}`
(biases included) and a fixed scaling :math:`s` (He et al.'s scaled parallel adapter uses
:math:`s = 4`). :math:`W_{up}` and :math:`b_{up}` start at zero, so :math:`\Delta h = 0` and the
adapted model computes exactly what the base model computes. Each layer gains
:math:`2 d r + d + r` parameters, as many as one sequential (Pfeiffer) adapter of the same ``r``.

How it differs from the sequential bottleneck adapter (:mod:`adapterlib.methods.adapter`), which
computes :math:`h' = h + s\,W_{up}\sigma(W_{down} h)` from the block's output
:math:`h = \mathrm{LN}(x + \mathrm{FFN}(x))` (our default position):

* what it reads: the FFN's input :math:`x`, not the FFN block's output, so adapter and FFN work
  side by side on the same input instead of one after the other;
* where its change lands: inside the residual sum, before the LayerNorm, so the next layer reads
  a normalised hidden state; the sequential adapter's change comes after the LayerNorm;
* what it is: a small second FFN (:math:`d \to r \to d`, an activation between) summed with the
  big one (:math:`d \to 4d \to d`); in He et al.'s unified view every method adds some
  :math:`\Delta h` to a hidden state, and the parallel adapter computes it from the input of the
  module whose output it changes;
* its scale: :math:`s = 4` by default, where the sequential adapter uses 1.

Neither merges: the activation between :math:`W_{down}` and :math:`W_{up}` keeps the change
from being a weight matrix.

Because the residual sum is a sum, adding :math:`\Delta h` to the FFN's output is adding it to
the residual input :math:`x` of the block ``layer.output``, which computes
:math:`\mathrm{LN}(\mathrm{dropout}(\mathrm{dense}(\cdot)) + x)`; the site around that block
does the latter, so it needs nothing of the block but its two inputs.

Saved tensors, per layer: ``layers.{i}.output.down.weight`` (and ``.bias``, ``up.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import PeftConfig, check_choice, check_dropout, check_positive_int, check_positive_number
from ..inject import hidden_size, place_like, wrap
from ..sites import AdapterSite
from . import Method, Size, check_rank, register
from .adapter import ACTIVATION_LAYERS


@dataclass
class ParallelAdapterConfig(PeftConfig):
    """Parallel adapter ``LN(x + FFN(x) + scaling * W_up act(W_down dropout(x)))`` in every layer.

    r: bottleneck width (1 <= r <= hidden size). scaling: the fixed factor s on the adapter's
    output (He et al.'s scaled parallel adapter: 4). activation: ``"relu"`` or ``"gelu"``.
    """

    method = "parallel"
    r: int = 16
    scaling: float = 4.0
    dropout: float = 0.0
    activation: str = "relu"

    def validate(self) -> None:
        super().validate()
        check_positive_int("r", self.r, "The bottleneck width r is usually 8-64.")
        check_positive_number("scaling", self.scaling, "It multiplies the adapter's output; He et al. use 4.")
        check_dropout(self.dropout)
        check_choice("activation", self.activation, tuple(ACTIVATION_LAYERS))


class ParallelAdapter(nn.Module):
    """``Delta h = scaling * up(act(down(dropout(x))))``, with ``up`` zero-initialised."""

    def __init__(
        self, d_model: int, r: int, scaling: float = 4.0, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, r)
        self.act = ACTIVATION_LAYERS[activation]()
        self.up = nn.Linear(r, d_model)
        self.dropout = nn.Dropout(dropout)
        self.scaling = scaling
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def extra_repr(self) -> str:
        return f"scaling={self.scaling:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d), the FFN's input
        bottleneck = self.act(self.down(self.dropout(x)))  # (B, T, r)
        return self.scaling * self.up(bottleneck)  # Delta h: (B, T, d)


class ParallelAdapterSite(AdapterSite):
    """Stands where a layer's FFN output block (``layer.output``) stood: the block computes
    ``LN(dropout(dense(hidden_states)) + input_tensor)``, and the site gives it ``x + Delta h`` as
    ``input_tensor``, with ``Delta h`` computed by the active adapter from ``x``.

    The block's own modules stay where other code looks for them: ``layer.output.dense`` reads
    through to the block, and assigning one of the block's modules (another method wrapping
    ``layer.output.LayerNorm``) replaces it inside the block, where the block uses it.
    """

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        # hidden_states: (B, T, i), the FFN's activation; input_tensor: (B, T, d), the FFN's input
        if self.active is not None:
            input_tensor = input_tensor + self.active(input_tensor)
        return self.base_layer(hidden_states, input_tensor)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":  # not set yet (while constructing or unpickling)
                raise
            return getattr(self.base_layer, name)

    def __setattr__(self, name: str, value) -> None:
        block = self.__dict__.get("_modules", {}).get("base_layer")
        if block is not None and name in block._modules:
            setattr(block, name, value)
        else:
            super().__setattr__(name, value)


class Parallel(Method):
    def check(self, model: nn.Module, layers: list[nn.Module], config: ParallelAdapterConfig) -> None:
        check_rank(config.r, hidden_size(layers[0]), "the hidden size")

    def insert(
        self, model: nn.Module, layers: list[nn.Module], config: ParallelAdapterConfig, adapter_name: str
    ) -> None:
        for layer in layers:
            site = wrap(layer, "output", ParallelAdapterSite)
            adapter = ParallelAdapter(
                hidden_size(layer), config.r, config.scaling, config.dropout, config.activation
            )
            site.add(adapter_name, place_like(adapter, site.base_layer))

    def parameter_count(self, model_config: Any, config: ParallelAdapterConfig) -> int:
        d, r = model_config.hidden_size, config.r
        return model_config.num_hidden_layers * (2 * d * r + d + r)


register(
    Parallel(
        name="parallel",
        label="parallel adapter",
        config_class=ParallelAdapterConfig,
        size=Size("r", "r", grid=(16, 64)),
        command_line_options=("scaling",),
        learning_rate=1e-3,
        marker="h",
        examples=({}, {"r": 3, "scaling": 1.0, "dropout": 0.1, "activation": "gelu"}),
    )
)
