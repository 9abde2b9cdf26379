r"""BitFit: train only the bias terms (Ben Zaken, Ravfogel & Goldberg, 2022).

Which biases: those of the encoder layers, as in the paper. A BERT layer has eight:

.. math::  b_q,\ b_k,\ b_v \ (\text{attention.self}), \quad b_{m_1} \ (\text{attention.output.dense}),
           \quad \beta_{LN_1}, \quad b_{m_2} \ (\text{intermediate.dense}), \quad b_{m_3} \ (\text{output.dense}),
           \quad \beta_{LN_2}

(:math:`\beta` is a LayerNorm's bias; its gain :math:`\gamma` stays frozen). The embeddings' LayerNorm
and the pooler are not encoder layers and stay frozen, as every method here leaves them. A model of
width :math:`d`, FFN width :math:`i` and :math:`L` layers trains

.. math::  L\,(7d + i)

parameters: :math:`d` for each bias but :math:`b_{m_2}`, which has :math:`i` (MiniLM-L6: 25,344;
BERT-base: 101,376, 0.09%). ``bias_terms`` picks a subset: the paper finds that :math:`b_q` and
:math:`b_{m_2}` alone come close to all of them, at :math:`L\,(d + i)` parameters.

How: the base bias :math:`b` stays frozen, and each adapter holds a change :math:`\Delta b`,
initialised to zero, added to the wrapped module's output:

.. math::  y = f(x) + \Delta b  \qquad (= W x + (b + \Delta b) \text{ for a Linear, }
           \gamma \odot \hat{x} + (\beta + \Delta b) \text{ for a LayerNorm})

so several named adapters share one base, disabling or unloading gives the base back exactly and
a checkpoint holds only the :math:`\Delta b`. The output depends on :math:`b + \Delta b` alone, so
the gradient with respect to :math:`\Delta b` is the gradient with respect to :math:`b`, and with
weight decay 0 an SGD or Adam(W) step moves :math:`b + \Delta b` exactly as it would move an
unfrozen :math:`b`. (Weight decay would pull :math:`\Delta b` towards zero, i.e. the bias towards
its pre-trained value, instead of :math:`b` towards zero.) Merging folds the change into the bias,
:math:`b \leftarrow b + \Delta b`; unmerging puts the original bias back.

Saved tensors, per bias: ``layers.{i}.attention.self.query.delta`` (one vector).
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

# The biases of a BERT layer, in the order the layer uses them, by layer-relative module name.
BIAS_TERMS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


@dataclass
class BitFitConfig(PeftConfig):
    """BitFit: only the biases of the modules in ``bias_terms`` change (default: all eight of each layer).

    Names are full layer-relative module names, matched exactly (``"output.dense"`` is not
    ``"attention.output.dense"``); the paper's small variant is
    ``("attention.self.query", "intermediate.dense")``.
    """

    method = "bitfit"
    bias_terms: tuple[str, ...] = BIAS_TERMS

    def validate(self) -> None:
        super().validate()
        if isinstance(self.bias_terms, str):
            self.bias_terms = (self.bias_terms,)
        if not isinstance(self.bias_terms, (tuple, list)) or not all(
            isinstance(t, str) for t in self.bias_terms
        ):
            raise TypeError(
                f"bias_terms must be module names, e.g. ('attention.self.query',); got {self.bias_terms!r}."
            )
        unknown = [t for t in self.bias_terms if t not in BIAS_TERMS]
        if unknown:
            raise ValueError(
                f"bias_terms {unknown} are not biases of a BERT layer; use full names from: "
                f"{', '.join(BIAS_TERMS)}."
            )
        if not self.bias_terms:
            raise ValueError("bias_terms is empty; name at least one module, e.g. ('attention.self.query',).")
        if len(set(self.bias_terms)) < len(self.bias_terms):
            raise ValueError(f"bias_terms names a module twice: {list(self.bias_terms)}.")
        self.bias_terms = tuple(self.bias_terms)


class BiasChange(nn.Module):
    """A trainable change ``delta`` of one bias, zero at the start: ``y -> y + delta``."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(features))

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # y: (B, T, features)
        return y + self.delta.to(y.dtype)  # delta: (features,), broadcast over B and T


class BitFitSite(MergeableSite):
    """A frozen Linear or LayerNorm whose output gets the active adapter's bias change."""

    def __init__(self, base_layer: nn.Module) -> None:
        super().__init__(base_layer)
        self.original_bias: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.active is None or self.merged_adapter is not None:
            return y
        return self.active(y)

    def folded_tensors(self) -> list[torch.Tensor]:
        return [base_linear(self).bias]  # base_linear: the Linear or LayerNorm under the sites

    def fold(self, change: BiasChange) -> None:
        """``b <- b + delta``."""
        bias = base_linear(self).bias
        bias += change.delta.to(bias.dtype)


def bias_sizes(model_config: Any) -> dict[str, int]:
    """``{module name: bias length}`` in a BERT layer of this shape: the output width of each."""
    linears = {name: out for name, (_, out) in bert_layer_linears(model_config).items()}
    return {name: linears.get(name, model_config.hidden_size) for name in BIAS_TERMS}  # a LayerNorm's: d


class BitFit(Method):
    mergeable = True

    def check(self, model: nn.Module, layers: list[nn.Module], config: BitFitConfig) -> None:
        for name in config.bias_terms:
            for layer in layers:
                try:
                    parent, attribute = module_slot(layer, name)
                    module = base_linear(getattr(parent, attribute))
                except AttributeError:
                    raise TypeError(
                        f"BitFit found no module {name} in {type(layer).__name__}; "
                        f"leave it out of bias_terms."
                    ) from None
                if not isinstance(getattr(module, "bias", None), nn.Parameter):
                    raise ValueError(
                        f"{name} ({type(module).__name__}) has no bias to train; leave it out of bias_terms."
                    )

    def insert(
        self, model: nn.Module, layers: list[nn.Module], config: BitFitConfig, adapter_name: str
    ) -> None:
        for layer in layers:
            for name in config.bias_terms:
                site = wrap(*module_slot(layer, name), BitFitSite)
                module = base_linear(site)  # the Linear or LayerNorm
                site.add(adapter_name, place_like(BiasChange(module.bias.numel()), module))

    def parameter_count(self, model_config: Any, config: BitFitConfig) -> int:
        sizes = bias_sizes(model_config)
        return model_config.num_hidden_layers * sum(sizes[name] for name in config.bias_terms)


register(
    BitFit(
        name="bitfit",
        label="BitFit",
        config_class=BitFitConfig,
        learning_rate=3e-3,
        marker="P",
    )
)
