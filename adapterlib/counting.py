"""Counting parameters: by looking at a model, and in closed form from its config.

Convention used everywhere in adapterlib: with a PEFT method and ``TaskType.SEQ_CLS`` the
trainable head is the ``classifier`` only (the pooler stays frozen, as in peft); the
"head only" baseline trains ``classifier`` and ``pooler``. ``total`` counts every parameter of
the model as it stands, including the inserted modules.

Closed forms: each method's file states its own (for a model of width ``d`` with ``L`` layers,
``r``: rank or bottleneck, ``n``: prefix length):

* bottleneck adapter: ``2dr + d + r`` per site (``2dr`` without biases), 1 site per layer
  (pfeiffer) or 2 (houlsby);
* LoRA: ``r (k + m)`` per targeted ``m x k`` Linear;
* prefix tuning: ``L * 2 * n * d``; with the MLP of width ``h``:
  ``n d + (d h + h) + (h * 2 L d + 2 L d)``;
* BitFit: ``L (7d + i)`` with ``i`` the FFN width; (IA)^3: ``L (2d + i)``;
* parallel adapter: ``2dr + d + r`` per layer; DoRA: ``r (k + m) + m`` per targeted ``m x k`` Linear;

and this module adds the rest of the model: classification head ``d * labels + labels``,
pooler ``d^2 + d``, BERT's embeddings and layers.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from .config import PeftConfig
from .inject import bert_layer_linears
from .methods import method_of


class ParameterCount(NamedTuple):
    trainable: int
    total: int
    fraction: float


def count_parameters(model: nn.Module) -> ParameterCount:
    """Trainable and total parameters of ``model`` (shared tensors counted once)."""
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params)
    return ParameterCount(trainable, total, trainable / total if total else 0.0)


def print_trainable_parameters(model: nn.Module) -> None:
    """Print the counts in peft's format."""
    trainable, total, fraction = count_parameters(model)
    print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * fraction:.4f}")


def method_parameter_count(model_config, peft_config: PeftConfig) -> int:
    """Parameters the method inserts into a model of shape ``model_config`` (no head): the
    closed form its method file states (:mod:`adapterlib.methods`)."""
    return method_of(peft_config).parameter_count(model_config, peft_config)


def head_parameter_count(model_config, num_labels: int, with_pooler: bool = False) -> int:
    """Classifier ``d * labels + labels``, plus the pooler's ``d^2 + d`` if asked."""
    d = model_config.hidden_size
    return d * num_labels + num_labels + (d * d + d if with_pooler else 0)


def layer_parameter_count(config) -> int:
    """One BERT-style layer: four ``d x d`` projections, the FFN and two LayerNorms."""
    d, i = config.hidden_size, config.intermediate_size
    return 4 * (d * d + d) + (d * i + i) + (i * d + d) + 2 * 2 * d


def bert_parameter_count(config, num_labels: int | None = None, pooler: bool = True) -> int:
    """All parameters of a BERT model (``BertModel``, or ``...ForSequenceClassification`` with labels)."""
    d = config.hidden_size
    embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * d + 2 * d
    total = (
        embeddings + config.num_hidden_layers * layer_parameter_count(config) + (d * d + d if pooler else 0)
    )
    return total + (head_parameter_count(config, num_labels) if num_labels else 0)


def expected_trainable_parameters(
    model_config, peft_config: PeftConfig, num_labels: int | None = None
) -> int:
    """Trainable parameters of ``get_peft_model`` on this shape: the method plus, if any, the classifier."""
    head = head_parameter_count(model_config, num_labels) if num_labels else 0
    return method_parameter_count(model_config, peft_config) + head


__all__ = [
    "ParameterCount",
    "bert_layer_linears",
    "bert_parameter_count",
    "count_parameters",
    "expected_trainable_parameters",
    "head_parameter_count",
    "layer_parameter_count",
    "method_parameter_count",
    "print_trainable_parameters",
]
