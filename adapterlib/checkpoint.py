"""Saving and loading adapter-only checkpoints.

A checkpoint is a directory with two files, named as in peft:

* ``adapter_config.json``: the format version, the method's config, the base model's shape and
  a fingerprint of its weights (and, when given, a portable name of the base model, never a
  path), and a SHA-256 of the weights file and the method's config together;
* ``adapter_model.safetensors``: only the adapter's tensors (and its copy of the task head),
  named relative to the layer and site they belong to (:meth:`PeftModel.adapter_state_dict`),
  so the names do not depend on what else is installed in the model.

It is a few hundred kilobytes where the base model is tens or hundreds of megabytes. Loading
checks the files, the shape and the tensors before it changes the model, and warns when the
base model's weights differ from those the adapter was trained on. Checkpoints written before
format version 2 (keys were module paths) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from .config import TaskType
from .inject import base_fingerprint, base_linear, find_layers, hidden_size, layer_paths, relative_to_layer
from .methods import config_from_dict
from .peft_model import PeftModel, wrap_model

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 2


class DifferentBaseWarning(UserWarning):
    """The adapter was trained on other base weights of the same shape."""


def model_shape(model: nn.Module) -> dict[str, int]:
    """The shape an adapter depends on: width, depth, heads, FFN width and, if any, labels."""
    layers = find_layers(model)
    attention = layers[0].attention.self
    attention = getattr(attention, "base_layer", attention)
    shape = {
        "hidden_size": hidden_size(layers[0]),
        "num_hidden_layers": len(layers),
        "num_attention_heads": attention.num_attention_heads,
        "intermediate_size": base_linear(layers[0].intermediate.dense).out_features,
    }
    classifier = getattr(model, "classifier", None)
    if classifier is not None:
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        shape["num_labels"] = linears[-1].out_features  # the last Linear of the head (BERT: the only one)
    return shape


def write_atomically(path: Path, data: bytes) -> None:
    """Write into a temporary file beside ``path``, then rename it: ``path`` is old or new, never half."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def checksum(weights: bytes, peft_config: dict[str, Any]) -> str:
    """SHA-256 of the weights file and the method's config: a damaged or edited file does not load."""
    return hashlib.sha256(weights + json.dumps(peft_config, sort_keys=True).encode()).hexdigest()


def adapter_files(
    model: PeftModel, adapter_name: str | None = None, base_model_name: str | None = None
) -> dict[str, bytes]:
    """The contents of both checkpoint files for one adapter, every check done."""
    if not isinstance(model, PeftModel):
        raise TypeError(
            f"save_adapter needs the PeftModel returned by get_peft_model, got {type(model).__name__}."
        )
    if base_model_name is not None and not isinstance(base_model_name, str):
        raise TypeError(
            f"base_model_name is a portable name such as 'bert-base-uncased', got {base_model_name!r}."
        )
    name = adapter_name or model.active_adapter
    if name not in model.peft_config:
        raise ValueError(f"no adapter named {name!r}; this model has: {', '.join(model.peft_config)}.")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.adapter_state_dict(name).items()}
    broken = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if broken:
        raise ValueError(
            f"adapter {name!r} holds NaN or infinite values ({broken[0]}); training diverged, "
            f"lower the learning rate. Nothing was saved."
        )
    weights = save_safetensors(tensors)
    peft_config = model.peft_config[name].to_dict()
    meta = {
        "format_version": FORMAT_VERSION,
        "peft_config": peft_config,
        "base_model_shape": model_shape(model.base_model),
        "base_model_fingerprint": model.base_model_fingerprint,
        "base_model_name": base_model_name,
        "sha256": checksum(weights, peft_config),
    }
    return {WEIGHTS_FILE: weights, CONFIG_FILE: (json.dumps(meta, indent=2) + "\n").encode()}


def write_files(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for file_name, data in files.items():
        write_atomically(directory / file_name, data)
    return directory


def save_adapter(
    model: PeftModel,
    directory: str | Path,
    adapter_name: str | None = None,
    base_model_name: str | None = None,
) -> Path:
    """Write one adapter (default: the active one) of ``model`` into ``directory``.

    Everything is computed and checked before a file is written; each file is replaced whole.
    """
    return write_files(Path(directory), adapter_files(model, adapter_name, base_model_name))


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``adapter_config.json``, or a clear error if the checkpoint is incomplete or damaged."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"adapter checkpoint directory {directory} does not exist.")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"adapter checkpoint {directory} is incomplete: {', '.join(missing)} missing "
            f"(save_adapter writes {CONFIG_FILE} and {WEIGHTS_FILE})."
        )
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{directory / CONFIG_FILE} is not valid JSON ({error}); the checkpoint is damaged."
        ) from None
    absent = [k for k in ("peft_config", "base_model_shape") if not isinstance(meta, dict) or k not in meta]
    if absent:
        raise ValueError(
            f"{directory / CONFIG_FILE} lacks {', '.join(absent)}: it was not written by save_adapter."
        )
    shape, version = meta["base_model_shape"], meta.get("format_version", 1)
    if (
        not isinstance(meta["peft_config"], dict)
        or not isinstance(shape, dict)
        or not all(isinstance(v, int) for v in shape.values())
        or not isinstance(version, int)
    ):
        raise ValueError(
            f"{directory / CONFIG_FILE} has fields of the wrong type; it is damaged. Save the adapter again."
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{directory} uses checkpoint format {meta['format_version']}; this adapterlib reads up to "
            f"{FORMAT_VERSION}. Upgrade adapterlib."
        )
    return meta


def read_weights(directory: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of ``adapter_model.safetensors``, checked against the recorded SHA-256 and for NaN."""
    path = directory / WEIGHTS_FILE
    data = path.read_bytes()
    recorded = meta.get("sha256")
    if recorded is not None and checksum(data, meta["peft_config"]) != recorded:
        raise ValueError(
            f"{path} or the peft_config in {CONFIG_FILE} differs from what was saved (the SHA-256 "
            f"recorded at saving does not match); the checkpoint is damaged or was edited. Save it again."
        )
    try:
        tensors = load_safetensors(data)
    except Exception as error:  # safetensors raises its own error types for every kind of damage
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}); it is truncated or damaged."
        ) from None
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise ValueError(f"{path} holds NaN or infinite values ({broken[0]}); it cannot be used.")
    return tensors


def keys_from_format_1(tensors: dict[str, torch.Tensor], base: nn.Module) -> dict[str, torch.Tensor]:
    """Rename format-1 keys (full module paths, e.g. ``bert.encoder.layer.3.output.LayerNorm.down.weight``)
    to format 2 (``layers.3.output.LayerNorm.down.weight``)."""
    paths = layer_paths(base)
    renamed = {}
    for key, tensor in tensors.items():
        if key.startswith("prefix_encoder."):
            key = "shared." + key.removeprefix("prefix_encoder.")
        renamed[relative_to_layer(key, paths)] = tensor
    return renamed


def check_base(
    meta: dict[str, Any], base: nn.Module, fingerprint: str, directory: Path, with_head: bool
) -> None:
    """Refuse another shape; warn about other weights of the same shape."""
    expected, actual = dict(meta["base_model_shape"]), model_shape(base)
    if not with_head:
        expected.pop("num_labels", None)
        actual.pop("num_labels", None)
    if expected != actual:
        differ = ", ".join(
            f"{k}: saved {expected.get(k)} vs model {actual.get(k)}"
            for k in sorted(set(expected) | set(actual))
            if expected.get(k) != actual.get(k)
        )
        raise ValueError(f"adapter in {directory} was trained on a base model of another shape ({differ}).")
    recorded = meta.get("base_model_fingerprint")
    if recorded is not None and recorded != fingerprint:
        name = meta.get("base_model_name") or "an unnamed model"
        warnings.warn(
            f"adapter in {directory} was trained on {name} with weights fingerprint {recorded}; this base model "
            f"has the same shape but fingerprint {fingerprint}, so its weights differ and the adapter may "
            "not fit them.",
            DifferentBaseWarning,
            stacklevel=3,
        )


def load_adapter(model: nn.Module, directory: str | Path, adapter_name: str = "default") -> PeftModel:
    """Put a saved adapter onto ``model``, a fresh base model or a PeftModel to add it to, and
    make it the active adapter.

    The files, the base model's shape and the tensors are checked before anything changes; on
    any error the model is left as it was.
    """
    directory = Path(directory)
    meta = read_adapter_config(directory)
    config = config_from_dict(meta["peft_config"])
    tensors = read_weights(directory, meta)
    base = model.base_model if isinstance(model, PeftModel) else model
    fingerprint = model.base_model_fingerprint if isinstance(model, PeftModel) else base_fingerprint(base)
    check_base(meta, base, fingerprint, directory, with_head=config.task_type == TaskType.SEQ_CLS)
    if meta.get("format_version", 1) == 1:
        tensors = keys_from_format_1(tensors, base)
    try:
        if isinstance(model, PeftModel):
            model.add_adapter(adapter_name, config, weights=tensors)
            return model
        return wrap_model(model, config, adapter_name, weights=tensors)
    except ValueError as error:
        raise ValueError(f"{directory}: {error}") from None
