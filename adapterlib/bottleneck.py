r"""The bottleneck adapter (Houlsby et al., 2019).

.. math::  h' = h + s \, W_{up}\, \sigma(W_{down}\, \mathrm{dropout}(h)), \qquad s = \alpha / r

with :math:`W_{down} \in \mathbb{R}^{r \times d}` and :math:`W_{up} \in \mathbb{R}^{d \times r}`.
It costs :math:`2dr + d + r` parameters with biases (:math:`2dr` without), against :math:`d^2`
for one dense layer. :math:`W_{up}` starts at zero, so at initialisation :math:`h' = h` and
the adapted model computes exactly what the base model computes.

Where it goes in a post-LayerNorm BERT layer, whose sub-layers compute :math:`\mathrm{LN}(x + F(x))`:

* placement ``houlsby``: after the attention block and after the FFN (two per layer);
  ``pfeiffer``: after the FFN only (one per layer, half the parameters);
* position ``after_layer_norm``: the adapter reads the normalised output,
  :math:`h = \mathrm{LN}(x + F(x))`, and the next sub-layer reads :math:`h'`;
  ``before_layer_norm``: it reads the projection :math:`F(x)`, giving
  :math:`\mathrm{LN}(x + F(x) + s\,W_{up}\sigma(W_{down}F(x)))`.

The defaults (``pfeiffer``, ``after_layer_norm``) were chosen by measurement on SST-2; see
:class:`adapterlib.AdapterConfig`.
"""

from __future__ import annotations

import torch
from torch import nn

from .sites import AdapterSite

ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class BottleneckAdapter(nn.Module):
    """``h + (alpha / r) * up(act(down(dropout(h))))``, with ``up`` zero-initialised."""

    def __init__(
        self,
        d_model: int,
        r: int,
        alpha: float | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.down = nn.Linear(d_model, r, bias=bias)
        self.act = ACTIVATION_LAYERS[activation]()
        self.up = nn.Linear(r, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.scaling = (alpha if alpha is not None else r) / r
        nn.init.zeros_(self.up.weight)
        if bias:
            nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.scaling * self.up(self.act(self.down(self.dropout(h))))


class BottleneckSite(AdapterSite):
    """Runs the base sub-layer projection, then the active bottleneck adapter on its output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.base_layer(x)
        return h if self.active is None else self.active(h)
