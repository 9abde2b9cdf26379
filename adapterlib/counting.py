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
pooler ``d^2 + d``, BERT's embeddings and layers; and the memory a training run needs at its
peak (:func:`peak_memory`), so that a size that cannot fit is refused before anything is allocated.
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


FLOAT_BYTES = 4  # weights, gradients, optimizer state and activations in float32
EVALUATION_BATCH = 64  # examples scored at once in evaluation and prediction


def activation_floats(model_config, batch: int, length: int, added_keys: int = 0) -> int:
    """Floats one layer keeps for the backward pass on a batch of ``batch`` sequences of ``length``
    tokens, in closed form (about, on the high side): ``B T (12 d + 2 i)`` for the projections,
    LayerNorms, dropout masks and the FFN; ``2 B (T + n) d`` for the keys and values with ``n``
    added keys (a prefix); ``2 B h T (T + n)`` for the attention scores and their softmax."""
    d, i, h = model_config.hidden_size, model_config.intermediate_size, model_config.num_attention_heads
    keys = length + added_keys
    return batch * length * (12 * d + 2 * i) + 2 * batch * keys * d + 2 * batch * h * length * keys


def peak_memory(
    model_config, parameters: int, trainable: int, batch: int, length: int, added_keys: int = 0
) -> int:
    """Bytes a float32 training run of this shape needs at its peak, in closed form: the weights
    (``4 P``), the gradients and AdamW's two moments of the trained parameters (``12 P_t``), and the
    larger of training's activations (every layer's, :func:`activation_floats`) and evaluation's
    (one layer at a time, :data:`EVALUATION_BATCH` sequences)."""
    training = model_config.num_hidden_layers * activation_floats(model_config, batch, length, added_keys)
    evaluation = activation_floats(model_config, EVALUATION_BATCH, length, added_keys)
    return FLOAT_BYTES * (parameters + 3 * trainable + max(training, evaluation))


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
    "activation_floats",
    "count_parameters",
    "expected_trainable_parameters",
    "head_parameter_count",
    "layer_parameter_count",
    "method_parameter_count",
    "peak_memory",
    "print_trainable_parameters",
]
