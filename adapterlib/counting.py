"""Counting parameters: by looking at a model, and in closed form from its config.

Convention used everywhere in adapterlib: with a PEFT method and ``TaskType.SEQ_CLS`` the
trainable head is the ``classifier`` only (the pooler stays frozen, as in peft); the
"head only" baseline trains ``classifier`` and ``pooler``. ``total`` counts every parameter of
the model as it stands, including the inserted modules.

Closed forms, per Transformer layer of width ``d`` (``i``: FFN width, ``r``: rank or bottleneck,
``n``: prefix length, ``L``: layers):

* bottleneck adapter: ``2dr + d + r`` per site (``2dr`` without biases), 1 site per layer
  (pfeiffer) or 2 (houlsby);
* LoRA: ``r (k + m)`` per targeted ``m x k`` Linear;
* prefix tuning: ``L * 2 * n * d``; with the MLP of width ``h``:
  ``n d + (d h + h) + (h * 2 L d + 2 L d)``;
* classification head: ``d * labels + labels``; pooler: ``d^2 + d``.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from .config import AdapterConfig, LoraConfig, PeftConfig, PrefixTuningConfig


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


def bert_layer_linears(config) -> dict[str, tuple[int, int]]:
    """``{layer-relative name: (in_features, out_features)}`` of a BERT-style layer."""
    d, i = config.hidden_size, config.intermediate_size
    return {
        "attention.self.query": (d, d),
        "attention.self.key": (d, d),
        "attention.self.value": (d, d),
        "attention.output.dense": (d, d),
        "intermediate.dense": (d, i),
        "output.dense": (i, d),
    }


def method_parameter_count(model_config, peft_config: PeftConfig) -> int:
    """Parameters the method inserts into a model of shape ``model_config`` (no head)."""
    d, layers = model_config.hidden_size, model_config.num_hidden_layers
    if isinstance(peft_config, AdapterConfig):
        r = peft_config.r
        per_site = 2 * d * r + (d + r if peft_config.bias else 0)
        sites = 2 if peft_config.placement == "houlsby" else 1
        return layers * sites * per_site
    if isinstance(peft_config, LoraConfig):
        linears = bert_layer_linears(model_config)
        targeted = [n for n in linears if any(n == t or n.endswith("." + t) for t in peft_config.target_modules)]
        return layers * sum(peft_config.r * sum(linears[n]) for n in targeted)
    if isinstance(peft_config, PrefixTuningConfig):
        n = peft_config.num_virtual_tokens
        if not peft_config.prefix_projection:
            return layers * 2 * n * d
        h = peft_config.encoder_hidden_size or d
        return n * d + (d * h + h) + (h * 2 * layers * d + 2 * layers * d)
    raise TypeError(f"no closed form for {type(peft_config).__name__}.")


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
    total = embeddings + config.num_hidden_layers * layer_parameter_count(config) + (d * d + d if pooler else 0)
    return total + (head_parameter_count(config, num_labels) if num_labels else 0)


def expected_trainable_parameters(model_config, peft_config: PeftConfig, num_labels: int | None = None) -> int:
    """Trainable parameters of ``get_peft_model`` on this shape: the method plus, if any, the classifier."""
    head = head_parameter_count(model_config, num_labels) if num_labels else 0
    return method_parameter_count(model_config, peft_config) + head
