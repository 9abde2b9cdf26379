"""Finding where adapters go in a model, checking a config against it, and inserting the modules.

A supported model is any module tree containing BERT-style layers: modules with
``attention.self`` (``query``/``key``/``value``), ``attention.output.dense``,
``intermediate.dense`` and ``output.dense``. That covers Hugging Face BERT and its close family
(RoBERTa, ELECTRA, MiniLM) and :class:`adapterlib.toy.TransformerLayer`.

What each method inserts is decided in its own file in :mod:`adapterlib.methods`; this module
knows only the anatomy of a layer.
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from .sites import AdapterSite, HeadSite

SUPPORTED = (
    "BERT-family encoders from transformers (BertModel, BertForSequenceClassification, RoBERTa, ELECTRA, "
    "MiniLM) and adapterlib.toy.TransformerLayer"
)


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
        raise TypeError(
            f"{type(model).__name__} is not a supported model family: adapterlib inserts into {SUPPORTED}."
        )
    return layers


def base_linear(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` under any adapter sites wrapped around it."""
    while isinstance(module, AdapterSite):
        module = module.base_layer
    return module


def bert_layer_linears(config) -> dict[str, tuple[int, int]]:
    """``{layer-relative name: (in_features, out_features)}`` of a BERT-style layer of this shape."""
    d, i = config.hidden_size, config.intermediate_size
    return {
        "attention.self.query": (d, d),
        "attention.self.key": (d, d),
        "attention.self.value": (d, d),
        "attention.output.dense": (d, d),
        "intermediate.dense": (d, i),
        "output.dense": (i, d),
    }


def hidden_size(layer: nn.Module) -> int:
    return base_linear(layer.output.dense).out_features


def layer_paths(model: nn.Module) -> dict[str, int]:
    """``{module path: index}`` of the model's Transformer layers (``bert.encoder.layer.3``: 3)."""
    index = {id(layer): i for i, layer in enumerate(find_layers(model))}
    return {path: index[id(module)] for path, module in model.named_modules() if id(module) in index}


def relative_to_layer(path: str, paths: dict[str, int]) -> str:
    """A name that does not depend on the model's wrappers or on other adapters: the part of
    ``path`` inside its innermost layer, as ``layers.{i}.…`` (``bert.encoder.layer.3.output.LayerNorm``:
    ``layers.3.output.LayerNorm``), without the ``base_layer`` hops of sites; a path outside every
    layer keeps its name, without those hops."""
    parts = [p for p in path.split(".") if p != "base_layer"]
    for cut in range(len(parts), 0, -1):
        if ".".join(parts[:cut]) in paths:
            return ".".join(["layers", str(paths[".".join(parts[:cut])]), *parts[cut:]])
    return ".".join(parts)


def is_adapted(model: nn.Module) -> bool:
    """True when adapterlib modules were already inserted into ``model``."""
    return any(isinstance(m, AdapterSite) for m in model.modules())


def base_fingerprint(model: nn.Module, samples: int = 256, through: torch.dtype | None = None) -> str | None:
    """A short hash that tells one set of base weights from another of the same shape.

    It reads the embedding tables and the Transformer layers' own parameters (never an
    adapter's, never the head's): ``samples`` evenly spaced values of each, rounded to bfloat16
    so the same weights in float32 or bfloat16 give the same hash. Any fine-tuning or a different
    pre-trained checkpoint changes it; the device, the wrapper class and the head do not. None
    for a model on the ``meta`` device (shapes without weights). ``through=torch.float16`` rounds
    to float16 first, so that a float32 model and its float16 copy give the same hash.
    """
    if any(p.is_meta for p in model.parameters()):
        return None
    tables = [
        (f"embedding{i}", m.weight)
        for i, m in enumerate(m for m in model.modules() if isinstance(m, nn.Embedding))
    ]
    layers = [item for layer in find_layers(model) for item in layer.named_parameters()]
    digest = hashlib.sha256()
    for path, parameter in tables + layers:
        parts = path.split(".")
        if "adapters" in parts:
            continue
        values = parameter.detach().flatten()
        count = min(samples, values.numel())
        picked = values[torch.arange(count, device=values.device) * (values.numel() - 1) // max(count - 1, 1)]
        digest.update(".".join(p for p in parts if p != "base_layer").encode())
        if through is not None:
            picked = picked.to(through)
        digest.update(picked.to(torch.bfloat16).float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


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
        stands_in = isinstance(module, AdapterSite) and module.stands_in_for_linear
        if stands_in or (
            isinstance(module, nn.Linear) and not getattr(parent, "stands_in_for_linear", False)
        ):
            name = ".".join(p for p in parts if p != "base_layer")
            targets[name] = (parent, parts[-1])
    return targets


def matches_target(name: str, targets: tuple[str, ...] | list[str]) -> bool:
    """The one rule for target names: a layer-relative ``name`` matches a target ``t`` if it is
    ``t`` or ends with ``"." + t`` (``attention.self.query`` matches ``query``, ``uery`` nothing;
    ``output.dense`` matches ``output.dense`` and ``attention.output.dense``)."""
    return any(name == t or name.endswith("." + t) for t in targets)


def targeted_linears(config, targets: tuple[str, ...] | list[str]) -> dict[str, tuple[int, int]]:
    """``{layer-relative name: (in_features, out_features)}`` of the Linear layers of a BERT-style
    layer of this shape that ``targets`` match (:func:`matches_target`): what LoRA, DoRA and
    (IA)³ count, in closed form."""
    return {
        name: shape for name, shape in bert_layer_linears(config).items() if matches_target(name, targets)
    }


def match_targets(layer: nn.Module, target_modules: tuple[str, ...]) -> list[str]:
    """Layer-relative names matched by the targets (:func:`matches_target`); ValueError for a
    target matching nothing."""
    names = list(linear_targets(layer))
    matched = {t: [n for n in names if matches_target(n, (t,))] for t in target_modules}
    missing = [t for t, found in matched.items() if not found]
    if missing:
        raise ValueError(
            f"target_modules {missing} match no Linear layer inside the Transformer layers. "
            f"Available names: {', '.join(names)}. A target matches a full name or its last dotted parts, e.g. 'query'."
        )
    return sorted({n for found in matched.values() for n in found}, key=names.index)


# ---------------------------------------------------------------- inserting


def wrap(parent: nn.Module, attribute: str, site_class: type[AdapterSite]) -> AdapterSite:
    """Replace ``parent.attribute`` by ``site_class(old module)`` unless it already is one."""
    module = getattr(parent, attribute)
    if not isinstance(module, site_class):
        module = site_class(module)
        setattr(parent, attribute, module)
    return module


def module_slot(layer: nn.Module, name: str) -> tuple[nn.Module, str]:
    """``(parent, attribute)`` where the layer's module ``name`` sits (layer-relative, e.g.
    ``attention.self.key``), looking through the sites on the way (prefix tuning's around
    ``attention.self``), so that the module, or the site already around it, can be wrapped there."""
    *path, attribute = name.split(".")
    parent = layer
    for part in path:
        parent = getattr(parent, part)
        while isinstance(parent, AdapterSite):
            parent = parent.base_layer
    return parent, attribute


def place_like(module: nn.Module, reference: nn.Module) -> nn.Module:
    """``module`` moved to the device and floating-point type of ``reference``'s weights, so an
    adapter on a bf16 base or on a GPU computes where and how its base layer does."""
    parameter = next(reference.parameters(), None)
    return module if parameter is None else module.to(device=parameter.device, dtype=parameter.dtype)


def insert_head(model: nn.Module, name: str) -> None:
    """Give adapter ``name`` its own trainable copy of ``model.classifier``."""
    site = wrap(model, "classifier", HeadSite)
    site.add(name, copy.deepcopy(site.base_layer))
