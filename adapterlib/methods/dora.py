r"""DoRA: weight-decomposed low-rank adaptation (Liu et al., 2024).

DoRA splits each targeted weight into a length per output feature and a direction, trains the
length directly and the direction with LoRA. For a Linear :math:`y = W x + b` with
:math:`W \in \mathbb{R}^{d \times k}` (row :math:`i` produces output feature :math:`i`):

.. math::  W' = \frac{m}{\lVert W + s B A \rVert_{\mathrm{row}}} \odot (W + s B A), \qquad s = \frac{\alpha}{r}

where :math:`\lVert V \rVert_{\mathrm{row}} \in \mathbb{R}^d` holds the Euclidean norm of each
row of :math:`V` (over the :math:`k` inputs), :math:`m \in \mathbb{R}^d` is the trained
magnitude, and the quotient scales row :math:`i` by :math:`m_i / n_i`. :math:`A` and :math:`B`
are LoRA's (Kaiming-uniform and zeros), and :math:`m` starts at :math:`\lVert W \rVert_{\mathrm{row}}`,
so :math:`W' = W` at the start and the adapted model computes exactly what the base model computes.

The norm :math:`n = \lVert W + s B A \rVert_{\mathrm{row}}` is treated as a constant when
gradients are taken (Liu et al., section 4.3: it follows :math:`B A` in the forward pass but
passes no gradient back), which saves memory at what the authors report to be a negligible
cost in accuracy. Gradients reach :math:`m` through :math:`m / n`, and :math:`A, B` through the
direction.

A row of zeros in :math:`W` (a pruned output feature) has norm 0; :math:`n` is floored at
:math:`\epsilon = 10^{-6}` so that the quotient is :math:`0 / \epsilon = 0` there instead of NaN.
(peft 0.22 divides by the bare norm; its issue #2049 reports the NaN this floor prevents.)

Written as a change to the frozen layer's output, which is how it is computed here (as in peft):

.. math::  y = W x + b + \Delta h, \qquad
           \Delta h = \Big(\frac{m}{n} - 1\Big) \odot W \tilde{x} + \frac{m}{n} \odot s B A \tilde{x},
           \qquad \tilde{x} = \mathrm{dropout}(x)

With dropout 0 (or in evaluation) this is :math:`W' x + b`. In training with dropout
the base term :math:`W x + b` reads :math:`x` and the update reads :math:`\tilde{x}`, as peft does.

A Linear of shape :math:`d \times k` gains :math:`r (d + k) + d` trainable parameters: LoRA's
:math:`r (d + k)` and one magnitude per output feature. Like LoRA it merges:
:math:`W \leftarrow W'` for inference at the base model's cost; unmerging puts :math:`W` back
bit for bit. Targets are named as for LoRA (:mod:`adapterlib.methods.lora`), and a DoRA adapter shares a
Linear's site with LoRA adapters.

Saved tensors, per targeted Linear: ``layers.{i}.attention.self.query.A``, ``.B`` and ``.magnitude``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..inject import targeted_linears
from . import Size, get_method, register
from .lora import Lora, LoraConfig, LoraUpdate


@dataclass
class DoraConfig(LoraConfig):
    """DoRA on the Linear layers named in ``target_modules``: LoRA's fields (``r``, ``alpha``,
    ``dropout``, ``target_modules``, the same defaults) plus a trained magnitude per output feature."""

    method = "dora"


NORM_FLOOR = 1e-6  # the smallest row norm DoRA divides by


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each row of ``weight`` (one per output feature of a Linear)."""
    return torch.linalg.vector_norm(weight, dim=1)


class DoraUpdate(LoraUpdate):
    """DoRA's change to one Linear's output: LoRA's ``A`` and ``B`` plus the ``magnitude`` m.

    It reads the Linear's weight ``W`` (the site owns the Linear; the update only reaches it) and
    returns ``(m/n - 1) * W x~ + (m/n) * s B A x~``, with ``n = ||W + s B A||`` per row, constant for gradients.
    """

    def __init__(self, linear: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__(linear.in_features, linear.out_features, r, alpha, dropout)
        object.__setattr__(self, "linear", linear)  # a reference, not a submodule
        self.magnitude = nn.Parameter(row_norms(linear.weight.detach()))

    @torch.no_grad()
    def direction_norms(self) -> torch.Tensor:
        """``n = max(||W + s B A||, 1e-6)`` per row, without gradient (Liu et al., section 4.3).

        The floor keeps a row of zeros (a pruned or dead output feature) from dividing by zero:
        its magnitude starts at 0, so ``m / n`` is 0 there rather than NaN. Rows of a trained
        model have norms near 1, far above the floor, where it changes nothing."""
        return row_norms(self.linear.weight + super().delta_weight()).clamp_min(NORM_FLOOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)  # (B, T, k)
        scale = self.magnitude / self.direction_norms()  # (d,): m / ||W + s B A||, row by row
        frozen = F.linear(x, self.linear.weight)  # W x~, without the bias: (B, T, d)
        low_rank = (x @ self.A.T @ self.B.T) * self.scaling  # (B, T, r) then (B, T, d)
        return ((scale - 1) * frozen + scale * low_rank).to(frozen.dtype)

    def delta_weight(self) -> torch.Tensor:
        """``W' - W``, with ``W' = (m/n) * (W + s B A)`` row by row: what merging adds to ``W``."""
        weight = self.linear.weight
        scale = self.magnitude / self.direction_norms()
        return scale[:, None] * (weight + super().delta_weight()) - weight


class Dora(Lora):
    """LoRA's targets and checks; a :class:`DoraUpdate` in each targeted Linear's site."""

    def update_for(self, linear: nn.Linear, config: DoraConfig) -> nn.Module:
        return DoraUpdate(linear, config.r, config.alpha, config.dropout)

    def parameter_count(self, model_config: Any, config: DoraConfig) -> int:
        """LoRA's ``r (d + k)`` per targeted ``d x k`` Linear, plus its ``d`` magnitudes."""
        targeted = targeted_linears(model_config, config.target_modules)  # {name: (in, out)}
        magnitudes = model_config.num_hidden_layers * sum(m for _, m in targeted.values())
        return super().parameter_count(model_config, config) + magnitudes


register(
    Dora(
        name="dora",
        label="DoRA",
        config_class=DoraConfig,
        size=Size("r", "r", grid=(8, 32)),
        learning_rate=1e-3,
        command_line_options=("target_modules",),
        explorer_choices=get_method("lora").explorer_choices,
        marker="v",
        examples=({}, {"r": 2, "dropout": 0.2, "target_modules": ("query", "key", "value", "dense")}),
    )
)
