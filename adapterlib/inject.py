"""Finding where adapters go in a model, checking a config against it, and inserting the modules.

A supported model is any module tree containing BERT-style layers: modules with
``attention.self`` (``query``/``key``/``value``), ``attention.output.dense``,
``intermediate.dense`` and ``output.dense``. That covers Hugging Face BERT and its close family
(RoBERTa, ELECTRA, MiniLM) and :class:`adapterlib.toy.TransformerLayer`.

Every ``check_*`` function raises before anything is changed; every ``insert_*`` function
assumes its check passed.
"""

from __future__ import annotations

import copy

from torch import nn

from .bottleneck import BottleneckAdapter, BottleneckSite
from .config import AdapterConfig, LoraConfig, PeftConfig, PrefixTuningConfig, TaskType
from .lora import LoraLinear, LoraUpdate
from .prefix import PrefixEncoder, PrefixSelfAttention
from .sites import AdapterSite, HeadSite

SUPPORTED = (
    "BERT-family encoders from transformers (BertModel, BertForSequenceClassification, RoBERTa, ELECTRA, "
    "MiniLM) and adapterlib.toy.TransformerLayer"
)
SELF_ATTENTION_ATTRIBUTES = ("query", "key", "value", "num_attention_heads", "attention_head_size", "dropout")


def is_transformer_layer(module: nn.Module) -> bool:
    """True for a module laid out like a ``BertLayer``."""
    attention = getattr(module, "attention", None)
    return (
        isinstance(getattr(attention, "self", None), nn.Module)
        and hasattr(getattr(attention, "output", None), "dense")
        and hasattr(getattr(module, "intermediate", None), "dense")
        and hasattr(getattr(module, "output", None), "dense")
    )


def find_layers(model: nn.Module) -> list[nn.Module]:
    """The model's Transformer layers in order, or a TypeError naming what is supported."""
    layers = [m for m in model.modules() if is_transformer_layer(m)]
    if not layers:
        raise TypeError(f"{type(model).__name__} is not a supported model family: adapterlib inserts into {SUPPORTED}.")
    return layers


def base_linear(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` under any adapter sites wrapped around it."""
    while isinstance(module, AdapterSite):
        module = module.base_layer
    return module


def hidden_size(layer: nn.Module) -> int:
    return base_linear(layer.output.dense).out_features


def is_adapted(model: nn.Module) -> bool:
    """True when adapterlib modules were already inserted into ``model``."""
    return any(isinstance(m, (AdapterSite, PrefixSelfAttention)) for m in model.modules())


def attention_implementation(model: nn.Module) -> str:
    """``eager`` if the model's config asks for it, else PyTorch's fused ``sdpa`` kernel."""
    config = getattr(model, "config", None)
    return "eager" if getattr(config, "_attn_implementation", "eager") == "eager" else "sdpa"


# ---------------------------------------------------------------- LoRA target names


def linear_targets(layer: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """LoRA candidates in a layer: ``{layer-relative name: (parent module, attribute)}``.

    Names skip the ``base_layer`` hops of adapter sites, so ``attention.self.query`` keeps its
    name after prefix tuning wrapped ``attention.self``. A Linear already wrapped by LoRA is
    listed as its :class:`LoraLinear`.
    """
    targets = {}
    for path, module in layer.named_modules():
        parts = path.split(".")
        if not path or "adapters" in parts:
            continue
        parent = layer.get_submodule(".".join(parts[:-1]))
        if isinstance(module, LoraLinear) or (isinstance(module, nn.Linear) and not isinstance(parent, LoraLinear)):
            name = ".".join(p for p in parts if p != "base_layer")
            targets[name] = (parent, parts[-1])
    return targets


def match_targets(layer: nn.Module, target_modules: tuple[str, ...]) -> list[str]:
    """Layer-relative names matched by the targets; ValueError for a target matching nothing."""
    names = list(linear_targets(layer))
    matched = {t: [n for n in names if n == t or n.endswith("." + t)] for t in target_modules}
    missing = [t for t, found in matched.items() if not found]
    if missing:
        raise ValueError(
            f"target_modules {missing} match no Linear layer inside the Transformer layers. "
            f"Available names: {', '.join(names)}. A target matches a full name or its last dotted parts, e.g. 'query'."
        )
    return sorted({n for found in matched.values() for n in found}, key=names.index)


# ---------------------------------------------------------------- checks (no changes made)


def check_rank(r: int, limit: int, what: str) -> None:
    if r > limit:
        raise ValueError(f"r={r} is larger than {what} ({limit}); choose 1 <= r <= {limit}.")


def check_config(model: nn.Module, config: PeftConfig) -> list[nn.Module]:
    """Raise a clear error if ``config`` cannot be applied to ``model``; return its layers."""
    if not isinstance(config, PeftConfig) or not config.method:
        raise TypeError(
            f"expected an AdapterConfig, LoraConfig or PrefixTuningConfig, got {type(config).__name__}."
        )
    layers = find_layers(model)
    if config.task_type == TaskType.SEQ_CLS and not isinstance(getattr(model, "classifier", None), nn.Module):
        raise ValueError(
            f"task_type SEQ_CLS needs a model with a `classifier` head such as BertForSequenceClassification; "
            f"{type(model).__name__} has none. Use task_type=None for a bare encoder."
        )
    if isinstance(config, AdapterConfig):
        check_rank(config.r, hidden_size(layers[0]), "the hidden size")
        attribute = adapter_attribute(config)
        if not all(isinstance(getattr(p, attribute, None), nn.Module) for layer in layers for p in adapter_parents(layer, config)):
            raise TypeError(
                f"position={config.position!r} needs a `{attribute}` module in every sub-layer output block "
                f"(BERT's post-LayerNorm layout); use position='before_layer_norm' for this model."
            )
    elif isinstance(config, LoraConfig):
        for layer in layers:
            targets = linear_targets(layer)
            for name in match_targets(layer, config.target_modules):
                parent, attribute = targets[name]
                linear = base_linear(getattr(parent, attribute))
                check_rank(config.r, min(linear.in_features, linear.out_features), f"the smaller side of {name}")
    elif isinstance(config, PrefixTuningConfig):
        attention = layers[0].attention.self
        attention = attention.base_layer if isinstance(attention, PrefixSelfAttention) else attention
        missing = [a for a in SELF_ATTENTION_ATTRIBUTES if not hasattr(attention, a)]
        if missing:
            raise TypeError(
                f"prefix tuning needs self-attention modules with {', '.join(SELF_ATTENTION_ATTRIBUTES)}; "
                f"{type(attention).__name__} lacks {', '.join(missing)}. Supported: {SUPPORTED}."
            )
    return layers


# ---------------------------------------------------------------- insertion


def wrap(parent: nn.Module, attribute: str, site_class: type[AdapterSite]) -> AdapterSite:
    """Replace ``parent.attribute`` by ``site_class(old module)`` unless it already is one."""
    module = getattr(parent, attribute)
    if not isinstance(module, site_class):
        module = site_class(module)
        setattr(parent, attribute, module)
    return module


def adapter_parents(layer: nn.Module, config: AdapterConfig) -> list[nn.Module]:
    """The sub-layer output blocks (projection, residual, LayerNorm) that receive an adapter."""
    return [layer.attention.output, layer.output] if config.placement == "houlsby" else [layer.output]


def adapter_attribute(config: AdapterConfig) -> str:
    """The module whose output the adapter reads: the LayerNorm or the projection before it."""
    return "LayerNorm" if config.position == "after_layer_norm" else "dense"


def insert_adapter(layers: list[nn.Module], config: AdapterConfig, name: str) -> None:
    for layer in layers:
        for parent in adapter_parents(layer, config):
            adapter = BottleneckAdapter(
                hidden_size(layer), config.r, config.alpha, config.dropout, config.activation, config.bias
            )
            wrap(parent, adapter_attribute(config), BottleneckSite).add(name, adapter)


def insert_lora(layers: list[nn.Module], config: LoraConfig, name: str) -> None:
    for layer in layers:
        targets = linear_targets(layer)
        for target in match_targets(layer, config.target_modules):
            parent, attribute = targets[target]
            site = wrap(parent, attribute, LoraLinear)
            linear = base_linear(site)
            site.add(name, LoraUpdate(linear.in_features, linear.out_features, config.r, config.alpha, config.dropout))


def insert_prefix(layers: list[nn.Module], config: PrefixTuningConfig, implementation: str) -> PrefixEncoder:
    for layer in layers:
        if not isinstance(layer.attention.self, PrefixSelfAttention):
            layer.attention.self = PrefixSelfAttention(layer.attention.self, implementation)
    return PrefixEncoder(
        len(layers),
        hidden_size(layers[0]),
        config.num_virtual_tokens,
        config.prefix_projection,
        config.encoder_hidden_size,
        config.init_std,
    )


def insert_head(model: nn.Module, name: str) -> None:
    """Give adapter ``name`` its own trainable copy of ``model.classifier``."""
    site = wrap(model, "classifier", HeadSite)
    site.add(name, copy.deepcopy(site.base_layer))
