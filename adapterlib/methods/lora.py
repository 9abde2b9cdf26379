r"""LoRA: low-rank adaptation of a frozen Linear layer (Hu et al., 2021).

.. math::  y = W x + b + \frac{\alpha}{r}\, B A\, \mathrm{dropout}(x)

with :math:`A \in \mathbb{R}^{r \times k}` (Kaiming-uniform) and :math:`B \in \mathbb{R}^{d \times r}`
(zeros), so :math:`\Delta W = \frac{\alpha}{r} B A` is zero at the start and the wrapped model
computes exactly what the base model computes. A Linear of shape :math:`d \times k` gains
:math:`r (d + k)` trainable parameters.

Because the update is linear, it can be folded into the weight, :math:`W \leftarrow W + \Delta W`
(:meth:`LoraLinear.merge`): inference then costs exactly what the base model costs.
:meth:`LoraLinear.unmerge` puts back the weight as it was before merging, bit for bit (a copy is
kept while merged, so changing ``B`` while merged cannot corrupt :math:`W`).

A target in ``target_modules`` matches a Linear inside a Transformer layer whose layer-relative
name equals it or ends with ``"." + target``: ``"query"`` matches ``attention.self.query``,
``"dense"`` matches all three ``dense`` layers, ``"uery"`` matches nothing.

Saved tensors, per targeted Linear: ``layers.{i}.attention.self.query.A`` and ``.B``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import PeftConfig, check_dropout, check_positive_int, check_positive_number
from ..inject import base_linear, linear_targets, match_targets, place_like, targeted_linears, wrap
from ..sites import MergeableSite
from . import Method, Size, check_rank, register


@dataclass
class LoraConfig(PeftConfig):
    """LoRA ``y = W x + b + (alpha/r) * B A dropout(x)`` on the Linear layers named in ``target_modules``.

    ``alpha`` stays fixed when ``r`` changes (peft's convention): doubling ``r`` halves the
    scaling, so the update's size at initialisation of training does not grow with ``r``.
    """

    method = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")

    def validate(self) -> None:
        super().validate()
        check_positive_int("r", self.r, "The LoRA rank r is usually 4-64.")
        check_positive_number(
            "alpha", self.alpha, "The update is scaled by alpha / r; peft's default is 8, ours 16."
        )
        check_dropout(self.dropout)
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        if not isinstance(self.target_modules, (tuple, list)) or not all(
            isinstance(t, str) and t for t in self.target_modules
        ):
            raise TypeError(
                f"target_modules must be names of Linear layers, e.g. ('query', 'value'); got {self.target_modules!r}."
            )
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules:
            raise ValueError(
                "target_modules is empty; name at least one Linear layer, e.g. ('query', 'value')."
            )


class LoraUpdate(nn.Module):
    """The trainable low-rank update ``(alpha / r) * B A`` for one Linear layer."""

    def __init__(
        self, in_features: int, out_features: int, r: int, alpha: float, dropout: float = 0.0
    ) -> None:
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
        down = self.dropout(x) @ self.A.T  # (B, T, k) @ (k, r) -> (B, T, r)
        return (down @ self.B.T) * self.scaling  # (B, T, r) @ (r, d) -> (B, T, d)

    def delta_weight(self) -> torch.Tensor:
        """``Delta W = (alpha / r) * B A``, shaped like the wrapped Linear's weight."""
        return (self.B @ self.A) * self.scaling


class LoraLinear(MergeableSite):
    """A frozen ``nn.Linear`` plus the active adapter's low-rank update."""

    stands_in_for_linear = True

    def __init__(self, base_layer: nn.Linear) -> None:
        super().__init__(base_layer)
        self.unmerged_weight: torch.Tensor | None = None  # W before merging, kept while merged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.active is None or self.merged_adapter is not None:
            return y
        return y + self.active(x)

    def folded_tensors(self) -> list[torch.Tensor]:
        return [self.base_layer.weight]

    def fold(self, update: LoraUpdate) -> None:
        """``W <- W + Delta W``."""
        self.base_layer.weight += update.delta_weight().to(self.base_layer.weight.dtype)


class Lora(Method):
    mergeable = True

    def check(self, model: nn.Module, layers: list[nn.Module], config: LoraConfig) -> None:
        for layer in layers:
            targets = linear_targets(layer)
            for name in match_targets(layer, config.target_modules):
                parent, attribute = targets[name]
                linear = base_linear(getattr(parent, attribute))
                check_rank(
                    config.r, min(linear.in_features, linear.out_features), f"the smaller side of {name}"
                )

    def insert(
        self, model: nn.Module, layers: list[nn.Module], config: LoraConfig, adapter_name: str
    ) -> None:
        for layer in layers:
            targets = linear_targets(layer)
            for target in match_targets(layer, config.target_modules):
                parent, attribute = targets[target]
                site = wrap(parent, attribute, LoraLinear)
                linear = base_linear(site)
                site.add(adapter_name, place_like(self.update_for(linear, config), linear))

    def update_for(self, linear: nn.Linear, config: LoraConfig) -> nn.Module:
        """The trained update that sits beside ``linear``."""
        return LoraUpdate(linear.in_features, linear.out_features, config.r, config.alpha, config.dropout)

    def parameter_count(self, model_config: Any, config: LoraConfig) -> int:
        targeted = targeted_linears(model_config, config.target_modules)  # {name: (in, out)}
        return model_config.num_hidden_layers * sum(config.r * (k + m) for k, m in targeted.values())


register(
    Lora(
        name="lora",
        label="LoRA",
        config_class=LoraConfig,
        size=Size("r", "r", grid=(8, 32, 2)),
        learning_rate=1e-3,
        command_line_options=("target_modules",),
        explorer_choices={
            "target_modules": (
                "query",
                "key",
                "value",
                "attention.output.dense",
                "intermediate.dense",
                "output.dense",
            )
        },
        marker="^",
        examples=({}, {"r": 4, "target_modules": ("query", "key", "value", "dense")}),
        seed_learning_rate=5e-4,
    )
)
