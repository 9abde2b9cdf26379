"""Saving and loading adapter-only checkpoints.

A checkpoint is a directory with two files, named as in peft:

* ``adapter_config.json``: the method's config, the base model's shape (and, when given, a
  portable name of the base model, never a path);
* ``adapter_model.safetensors``: only the adapter's tensors (and its copy of the task head).

It is a few hundred kilobytes where the base model is tens or hundreds of megabytes.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from .config import TaskType, config_from_dict
from .inject import base_linear, find_layers, hidden_size
from .peft_model import PeftModel, get_peft_model

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


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
        shape["num_labels"] = base_linear(classifier).out_features
    return shape


def save_adapter(
    model: PeftModel, directory: str | Path, adapter_name: str | None = None, base_model_name: str | None = None
) -> Path:
    """Write one adapter (default: the active one) of ``model`` into ``directory``."""
    if not isinstance(model, PeftModel):
        raise TypeError(f"save_adapter needs the PeftModel returned by get_peft_model, got {type(model).__name__}.")
    name = adapter_name or model.active_adapter
    if name not in model.peft_config:
        raise ValueError(f"no adapter named {name!r}; this model has: {', '.join(model.peft_config)}.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.adapter_state_dict(name).items()}
    save_file(tensors, directory / WEIGHTS_FILE)
    meta = {
        "peft_config": model.peft_config[name].to_dict(),
        "base_model_shape": model_shape(model.base_model),
        "base_model_name": base_model_name,
    }
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    """The parsed ``adapter_config.json``, or a clear error if the checkpoint is incomplete."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"adapter checkpoint directory {directory} does not exist.")
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"adapter checkpoint {directory} is incomplete: {', '.join(missing)} missing "
            f"(save_adapter writes {CONFIG_FILE} and {WEIGHTS_FILE})."
        )
    return json.loads((directory / CONFIG_FILE).read_text())


def load_adapter(model: nn.Module, directory: str | Path, adapter_name: str = "default") -> PeftModel:
    """Put a saved adapter onto ``model``: a fresh base model, or a PeftModel to add it to.

    Checks the base model's shape against the one recorded at saving time before changing
    anything, and fails with a clear error when they differ.
    """
    meta = read_adapter_config(directory)
    config = config_from_dict(meta["peft_config"])
    base = model.base_model if isinstance(model, PeftModel) else model
    expected, actual = meta["base_model_shape"], model_shape(base)
    if config.task_type != TaskType.SEQ_CLS:
        expected, actual = ({k: v for k, v in s.items() if k != "num_labels"} for s in (expected, actual))
    if expected != actual:
        differ = ", ".join(f"{k}: saved {expected.get(k)} vs model {actual.get(k)}" for k in expected if expected.get(k) != actual.get(k))
        raise ValueError(f"adapter in {directory} was trained on a base model of another shape ({differ}).")
    tensors = load_file(Path(directory) / WEIGHTS_FILE)
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, config)
        peft_model = model
    else:
        peft_model = get_peft_model(model, config, adapter_name)
    target = peft_model.adapter_state_dict(adapter_name)
    if set(target) != set(tensors) or any(target[k].shape != tensors[k].shape for k in target):
        raise ValueError(f"{Path(directory) / WEIGHTS_FILE} does not hold the tensors its config describes; it is corrupt.")
    for key, tensor in tensors.items():
        target[key].copy_(tensor)
    return peft_model
