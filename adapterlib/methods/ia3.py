r"""(IA)³: infused adapter by inhibiting and amplifying inner activations (Liu et al., 2022).

Three learned vectors per layer rescale, element by element, the attention's keys and values
and the FFN's activation:

.. math::  K = l_k \odot (W_k x + b_k), \qquad V = l_v \odot (W_v x + b_v), \qquad
           h = W_{out}\,\bigl(l_{ff} \odot \mathrm{gelu}(W_{in} x + b_{in})\bigr) + b_{out}

with :math:`l_k, l_v \in \mathbb{R}^d` and :math:`l_{ff} \in \mathbb{R}^i`, all initialised to ones,
so the adapted model starts exactly where the base model was. :math:`l_{ff}` scales the *input*
of each layer's ``output.dense`` (the FFN's second Linear), not ``attention.output.dense``. A model
of width :math:`d`, FFN width :math:`i` and :math:`L` layers trains

.. math::  L\,(2d + i)

parameters (MiniLM-L6: 13,824; BERT-base: 55,296). The method has nothing to size: the three
vectors of each layer are all of it.

Each rescaling is linear, so it folds into the weights: :math:`W_k \leftarrow \mathrm{diag}(l_k) W_k`,
:math:`b_k \leftarrow l_k \odot b_k` (the same for :math:`v`), and
:math:`W_{out} \leftarrow W_{out}\,\mathrm{diag}(l_{ff})`. Unmerging puts the original weights back.

Saved tensors, per rescaled Linear: ``layers.{i}.attention.self.key.l`` (and ``value``,
``output.dense``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import PeftConfig
from ..inject import base_linear, bert_layer_linears, module_slot, place_like, wrap
from ..sites import MergeableSite
from . import Method, register

# The Linear layers (IA)^3 rescales, and whether the vector scales their input (else their output).
RESCALED = {"attention.self.key": False, "attention.self.value": False, "output.dense": True}


@dataclass
class IA3Config(PeftConfig):
    """(IA)³: learned vectors rescale the keys, the values and the FFN activation of every layer.

    There is nothing to choose besides ``task_type``: the method is the three vectors per layer.
    """

    method = "ia3"


class Rescaling(nn.Module):
    """A learned vector ``l``, ones at the start, that multiplies a Linear's input or output."""

    def __init__(self, features: int, scales_input: bool) -> None:
        super().__init__()
        self.l = nn.Parameter(torch.ones(features))
        self.scales_input = scales_input

    def extra_repr(self) -> str:
        return f"features={self.l.numel()}, scales={'input' if self.scales_input else 'output'}"


class IA3Linear(MergeableSite):
    """A frozen Linear whose input or output the active adapter's vector rescales."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.original_weights: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rescaling = self.active
        if rescaling is None or self.merged_adapter is not None:
            return self.base_layer(x)
        if rescaling.scales_input:  # x: (B, T, i), l: (i,)
            return self.base_layer(x * rescaling.l.to(x.dtype))  # (B, T, d)
        y = self.base_layer(x)  # (B, T, d)
        return y * rescaling.l.to(y.dtype)  # l: (d,), broadcast over B and T

    def folded_tensors(self) -> list[torch.Tensor]:
        linear = base_linear(self)
        return [linear.weight] + ([linear.bias] if linear.bias is not None else [])

    def fold(self, rescaling: Rescaling) -> None:
        """``W <- W diag(l)`` for an input vector; ``W <- diag(l) W``, ``b <- l * b`` for an output vector."""
        linear = base_linear(self)
        scale = rescaling.l.to(linear.weight.dtype)
        if rescaling.scales_input:
            linear.weight *= scale[None, :]
        else:
            linear.weight *= scale[:, None]
            if linear.bias is not None:
                linear.bias *= scale


class IA3(Method):
    mergeable = True

    def check(self, model: nn.Module, layers: list[nn.Module], config: IA3Config) -> None:
        for layer in layers:
            for name in RESCALED:
                try:
                    parent, attribute = module_slot(layer, name)
                    module = base_linear(getattr(parent, attribute))
                except AttributeError:
                    module = None
                if not isinstance(module, nn.Linear):
                    found = "missing" if module is None else f"a {type(module).__name__}"
                    raise TypeError(
                        f"(IA)³ rescales the Linear layers {', '.join(RESCALED)} of every Transformer "
                        f"layer; {type(layer).__name__}'s {name} is {found}."
                    )

    def insert(self, model: nn.Module, layers: list[nn.Module], config: IA3Config, adapter_name: str) -> None:
        for layer in layers:
            for name, scales_input in RESCALED.items():
                site = wrap(*module_slot(layer, name), IA3Linear)
                linear = base_linear(site)
                features = linear.in_features if scales_input else linear.out_features
                site.add(adapter_name, place_like(Rescaling(features, scales_input), linear))

    def parameter_count(self, model_config: Any, config: IA3Config) -> int:
        shapes = bert_layer_linears(model_config)
        per_layer = sum(shapes[name][0 if scales_input else 1] for name, scales_input in RESCALED.items())
        return model_config.num_hidden_layers * per_layer


register(
    IA3(
        name="ia3",
        label="(IA)³",
        config_class=IA3Config,
        learning_rate=1e-2,
        marker="X",
    )
)
