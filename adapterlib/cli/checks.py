"""The checks the commands make before anything slow, each refusing a mistake with a :class:`UsageError`.

The numbers, as argparse parses them (:func:`positive_int` and the like); the method's flags and
options; the ``--out`` location; whether the Hugging Face hub is needed and does not answer; every
row of the data folder; the model's config and tokenizer; and the method applied to the model built
on the ``meta`` device (:func:`check_method`). Also :func:`read_json`, for the JSON files the
commands read back.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import DATA_DIR_VARIABLE, data_rows, hub_reachable, hub_switched_off, resolve_data_dir
from ..inject import find_layers
from ..methods import Method, get_method, method_names, methods
from ..modeling import (
    MeanPoolingClassifier,
    load_tokenizer,
    model_location,
    needs_hub,
    peft_config_for,
    resolve_model_name,
    weight_files,
)
from ..peft_model import get_peft_model

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig

    from ..config import PeftConfig

PACKAGED_ADVICE = "pass --model PATH to a model folder, or leave --model out for the packaged MiniLM-L6"


class UsageError(Exception):
    """A mistake in the command: reported in one line, exit code 2."""


def whole_number(text: str, least: int, meaning: str) -> int:
    """``text`` as an int of at least ``least``; an argparse error saying what the number means."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be {meaning}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1, "a positive whole number")


def non_negative_int(text: str) -> int:
    return whole_number(text, 0, "0 or more")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number greater than 0, got {text}")
    return value


def option_fields(method: Method) -> tuple[str, ...]:
    """The config fields of ``method`` that the command line sets: its size (if it has one), then its options."""
    return (*([method.size.field] if method.size else []), *method.command_line_options)


def method_flags() -> dict[str, str]:
    """``{config field: flag}`` for every field some registered method takes on the command line."""
    return {field: "--" + field.replace("_", "-") for method in methods() for field in option_fields(method)}


def method_options(args: argparse.Namespace) -> dict:
    """The PEFT config fields named on the command line for ``args.method``."""
    if args.method not in method_names():
        return {}
    given = {field: getattr(args, field) for field in option_fields(get_method(args.method))}
    return {
        field: tuple(value) if isinstance(value, list) else value
        for field, value in given.items()
        if value is not None
    }


def check_method_flags(args: argparse.Namespace) -> None:
    """Refuse a method option the chosen method does not take: it would be silently ignored."""
    takes = option_fields(get_method(args.method)) if args.method in method_names() else ()
    flags = method_flags()
    wrong = [flag for field, flag in flags.items() if getattr(args, field) is not None and field not in takes]
    if wrong:
        options = (
            f"its options are {', '.join(flags[f] for f in takes)}" if takes else "it takes no method options"
        )
        raise UsageError(
            f"{wrong[0]} does not apply to --method {args.method} ({options}); leave {wrong[0]} out."
        )


def method_config(method: str, options: dict) -> PeftConfig | None:
    """The PEFT config (None for full and head), or a UsageError with the config's own reason."""
    try:
        return peft_config_for(method, options)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


def check_sources(
    model: str | None,
    data_dir: str | None,
    uses_data: bool = True,
    source: str = "--model",
    advice: str = PACKAGED_ADVICE,
) -> None:
    """Refuse at once what would need the Hugging Face hub when the hub does not answer: no data
    folder (SST-2 would come from the hub), or a ``--model`` that is neither packaged nor a folder.

    With ``$HF_HUB_OFFLINE`` set a hub model name is let through: transformers looks for it in
    its local cache and says at once when it is not there (:func:`model_config`).
    """
    data_from_hub = uses_data and resolve_data_dir(data_dir) is None
    model_name = resolve_model_name(model)
    model_from_hub = needs_hub(model_name) and not hub_switched_off()
    if not (data_from_hub or model_from_hub) or hub_reachable():
        return
    hub = (
        "is switched off ($HF_HUB_OFFLINE / $HF_DATASETS_OFFLINE)"
        if hub_switched_off()
        else "does not answer"
    )
    if data_from_hub:
        raise UsageError(
            f"no SST-2 data: pass --data-dir PATH (a GLUE-format folder with train.tsv and dev.tsv) "
            f"or set ${DATA_DIR_VARIABLE}; the Hugging Face hub {hub}."
        )
    raise UsageError(f"{source} {model_name} is not a local folder and the Hugging Face hub {hub}; {advice}.")


def check_data(data_dir: str | None, train_size: int) -> dict[str, int]:
    """Every row of the data folder (the hub's splits are known), and ``--train-size`` against it;
    returns the rows per split."""
    try:
        rows = data_rows(data_dir)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    if train_size > rows["train"]:
        raise UsageError(
            f"--train-size {train_size:,} is more than the {rows['train']:,} rows of the training split; "
            f"pass at most {rows['train']}, or 0 for all of them."
        )
    return rows


def check_out_location(out: Path, written: Path) -> None:
    """Refuse an ``--out`` where ``written`` cannot be made: inside a file, or in a folder this
    user cannot write to."""
    existing = next(
        (folder for folder in written.absolute().parents if folder.exists()), Path(written.absolute().anchor)
    )
    if not existing.is_dir():
        raise UsageError(
            f"--out {out} lies inside {existing}, which is a file; choose a path inside a folder."
        )
    try:  # the only sure test, also where permissions say yes but the file system says no (/proc)
        os.rmdir(tempfile.mkdtemp(prefix=".adapterlib-", dir=existing))
    except OSError as error:
        raise UsageError(
            f"--out {out}: cannot create anything in {existing} ({error.strerror}); "
            f"choose a folder you can write to."
        ) from None


def model_config(name: str, source: str = "--model", advice: str = PACKAGED_ADVICE) -> PretrainedConfig:
    """The config of the resolved model ``name``, or a UsageError saying why it cannot be loaded;
    ``source`` and ``advice`` word the message for where the name came from."""
    from transformers import AutoConfig

    location = Path(model_location(name))
    if location.is_dir():
        missing = [
            what
            for what, present in (
                ("config.json", (location / "config.json").is_file()),
                ("weights (model.safetensors)", bool(weight_files(location))),
            )
            if not present
        ]
        if missing:
            raise UsageError(
                f"{source} {name} is a folder without {' or '.join(missing)}, so not a model folder "
                f"(save_pretrained writes config.json, model.safetensors and the tokenizer's files); {advice}."
            )
    try:
        return AutoConfig.from_pretrained(str(location))
    except (OSError, ValueError) as error:
        if location.is_dir():
            raise UsageError(
                f"{source} {name}: its config.json cannot be read ({error}); {advice}."
            ) from None
        cache = " in the local cache ($HF_HUB_OFFLINE is set)" if hub_switched_off() else ""
        raise UsageError(
            f"{source} {name} is neither a model folder nor a model on the Hugging Face hub{cache}; {advice}."
        ) from None


def check_tokenizer(name: str, source: str = "--model") -> None:
    """Load the model's tokenizer once, so a model folder without one fails before training."""
    try:
        load_tokenizer(name)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"{source} {name} has no usable tokenizer ({error}); save the tokenizer beside the model "
            f"(tokenizer.save_pretrained(folder))."
        ) from None


def classifier_skeleton(config: PretrainedConfig, pooling: str) -> nn.Module:
    """The 2-class classifier :func:`load_classifier` builds, on the ``meta`` device: every
    module and shape, no weights, no memory, built in milliseconds."""
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    config.num_labels = 2
    with torch.device("meta"):
        if pooling == "cls":
            return AutoModelForSequenceClassification.from_config(config)
        return MeanPoolingClassifier(AutoModel.from_config(config, add_pooling_layer=False), num_labels=2)


def check_method(name: str, config: PretrainedConfig, method: str, options: dict, pooling: str) -> nn.Module:
    """Apply the method to the model's skeleton as training will, so that what does not fit (an
    ``r`` wider than the hidden size, a LoRA target naming no layer, a model outside the BERT
    family) is refused with the package's own reason. Returns the skeleton."""
    peft_config = method_config(method, options)
    try:
        model = classifier_skeleton(config, pooling)
    except (TypeError, ValueError) as error:
        raise UsageError(
            f"--model {name} ({config.model_type}) cannot be built as a classifier with --pooling {pooling} "
            f"({error}); adapterlib trains BERT-family models."
        ) from None
    try:
        find_layers(model)
        if peft_config is not None:
            import torch

            with torch.device("meta"):  # whatever the sizes, nothing real is allocated
                get_peft_model(model, peft_config)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--method {method} on --model {name}: {error}") from None
    return model


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a UsageError saying the file is damaged and ``what`` to do."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({error}); {what}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} holds a JSON {type(value).__name__}, not an object; {what}")
    return value
