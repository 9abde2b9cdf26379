r"""LoRA: low-rank adaptation of a frozen Linear layer (Hu et al., 2021).

.. math::  y = W x + b + \frac{\alpha}{r}\, B A\, \mathrm{dropout}(x)

with :math:`A \in \mathbb{R}^{r \times k}` (Kaiming-uniform) and :math:`B \in \mathbb{R}^{d \times r}`
(zeros), so :math:`\Delta W = \frac{\alpha}{r} B A` is zero at the start and the wrapped model
computes exactly what the base model computes. A Linear of shape :math:`d \times k` gains
:math:`r (d + k)` trainable parameters.

Because the update is linear, it can be folded into the weight, :math:`W \leftarrow W + \Delta W`
(:meth:`LoraLinear.merge`): inference then costs exactly what the base model costs.
:meth:`LoraLinear.unmerge` subtracts it again (equal to the original up to float rounding).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .sites import AdapterSite


class LoraUpdate(nn.Module):
    """The trainable low-rank update ``(alpha / r) * B A`` for one Linear layer."""

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.empty(r, in_features))
        self.B = nn.Parameter(torch.zeros(out_features, r))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # the default init of nn.Linear
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / r

    def extra_repr(self) -> str:
        (out_features, r), in_features = self.B.shape, self.A.shape[1]
        return f"in_features={in_features}, out_features={out_features}, r={r}, scaling={self.scaling:g}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The update's contribution to the output, ``(alpha / r) * B A dropout(x)``."""
        return (self.dropout(x) @ self.A.T @ self.B.T) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """``Delta W = (alpha / r) * B A``, shaped like the wrapped Linear's weight."""
        return (self.B @ self.A) * self.scaling


class LoraLinear(AdapterSite):
    """A frozen ``nn.Linear`` plus the active adapter's low-rank update."""

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__(base_layer)
        self.merged_adapter: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.active is None or self.merged_adapter is not None:
            return y
        return y + self.active(x)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the active update into the base weight: ``W <- W + (alpha/r) B A``."""
        if self.merged_adapter is not None:
            raise RuntimeError(f"adapter {self.merged_adapter!r} is already merged; call unmerge() first.")
        if self.active is None:
            return
        self.base_layer.weight += self.active.delta_weight().to(self.base_layer.weight.dtype)
        self.merged_adapter = self.active_adapter

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the merged update again, restoring the base weight."""
        if self.merged_adapter is None:
            return
        update = self.adapters[self.merged_adapter].delta_weight()
        self.base_layer.weight -= update.to(self.base_layer.weight.dtype)
        self.merged_adapter = None
