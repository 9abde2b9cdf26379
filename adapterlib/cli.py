"""``python -m adapterlib`` / ``adapterlib``: train, predict and count from the command line.

    adapterlib train --method lora --r 8 --out runs/lora
    adapterlib predict --checkpoint runs/lora "a gripping, funny film" "a dull mess"
    adapterlib count --method adapter --r 16
    torchrun --nproc_per_node 2 -m adapterlib -- train --method lora --r 8 --out runs/lora

The last line trains one model in two processes (``--`` keeps torchrun from reading ``--r`` as
an abbreviation of one of its own options).

A mistake in a command is reported in one line on stderr, ``adapterlib <command>: error: ...``,
saying what is wrong and how to put it right, with exit code 2 and no file written. Everything
is checked before anything slow happens: the numbers as they are parsed, then the method's
options, the output folder, every row of the data, and the model, built on the ``meta`` device
(shapes only, no weights) with the method applied to it. Only then are the training modules (the
``Trainer``, ``datasets``) imported. Any other exception is a bug, and shows its traceback.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_adapter, save_adapter
from .counting import bert_parameter_count, head_parameter_count, method_parameter_count
from .data import (
    DATA_DIR_VARIABLE,
    LABEL_NAMES,
    data_fingerprint,
    data_rows,
    fingerprint,
    hub_reachable,
    hub_switched_off,
    read_lines,
    resolve_data_dir,
)
from .inject import find_layers
from .modeling import (
    DEFAULT_POOLING,
    training_choices,
    POOLINGS,
    PRECISIONS,
    MeanPoolingClassifier,
    is_main_process,
    load_classifier,
    load_tokenizer,
    model_location,
    needs_hub,
    peft_config_for,
    process_count,
    resolve_model_name,
    resolve_precision,
)
from .methods import Method, get_method, method_names, methods
from .peft_model import PeftModel, get_peft_model

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from .config import PeftConfig

TRAINED_TENSORS = "model.safetensors"
INTERRUPTED = {"train": "nothing was saved", "compare": "finished runs are kept in runs.jsonl; the same command resumes"}
FINGERPRINTS = ("data_fingerprint", "model_fingerprint")
SETTING_NAMES = {"train_size": "--train-size", "epochs": "--epochs", "precision": "precision",
                 "data_fingerprint": "data fingerprint", "model_fingerprint": "model fingerprint"}
LABEL_VALUES = {"0": 0, "1": 1, "negative": 0, "positive": 1}
PACKAGED_ADVICE = "pass --model PATH to a model folder, or leave --model out for the packaged MiniLM-L6"
RETRAIN = "train again into a new folder."
DAMAGED = f"the checkpoint is damaged; {RETRAIN}"
MIXED = f"the files come from different runs; {RETRAIN}"


class UsageError(Exception):
    """A mistake in the command: reported in one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse, reporting its errors like every other mistake: one line, no usage block, then
    exit code 2 (``SystemExit``, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        listed = "the options" if " " in self.prog else "the commands"
        self.exit(report_error(self.prog, f"{message}; `{self.prog} --help` lists {listed}."))


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
    """The config fields of ``method`` that the command line sets: its size, then its options."""
    return (method.size.field, *method.command_line_options)


def method_flags() -> dict[str, str]:
    """``{config field: flag}`` for every field some registered method takes on the command line."""
    return {field: "--" + field.replace("_", "-") for method in methods() for field in option_fields(method)}


def method_options(args: argparse.Namespace) -> dict:
    """The PEFT config fields named on the command line for ``args.method``."""
    if args.method not in method_names():
        return {}
    given = {field: getattr(args, field) for field in option_fields(get_method(args.method))}
    return {field: tuple(value) if isinstance(value, list) else value for field, value in given.items() if value is not None}


def check_method_flags(args: argparse.Namespace) -> None:
    """Refuse a method option the chosen method does not take: it would be silently ignored."""
    takes = option_fields(get_method(args.method)) if args.method in method_names() else ()
    flags = method_flags()
    wrong = [flag for field, flag in flags.items() if getattr(args, field) is not None and field not in takes]
    if wrong:
        options = f"its options are {', '.join(flags[f] for f in takes)}" if takes else "it takes no method options"
        raise UsageError(f"{wrong[0]} does not apply to --method {args.method} ({options}); leave {wrong[0]} out.")


def method_config(method: str, options: dict) -> PeftConfig | None:
    """The PEFT config (None for full and head), or a UsageError with the config's own reason."""
    try:
        return peft_config_for(method, options)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None


def check_sources(model: str | None, data_dir: str | None, uses_data: bool = True) -> None:
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
    hub = "is switched off ($HF_HUB_OFFLINE / $HF_DATASETS_OFFLINE)" if hub_switched_off() else "does not answer"
    if data_from_hub:
        raise UsageError(f"no SST-2 data: pass --data-dir PATH (a GLUE-format folder with train.tsv and dev.tsv) "
                         f"or set ${DATA_DIR_VARIABLE}; the Hugging Face hub {hub}.")
    raise UsageError(f"--model {model_name} is not a local folder and the Hugging Face hub {hub}; {PACKAGED_ADVICE}.")


def check_data(data_dir: str | None, train_size: int) -> None:
    """Every row of the data folder (the hub's splits are known), and ``--train-size`` against it."""
    try:
        rows = data_rows(data_dir)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    if train_size > rows["train"]:
        raise UsageError(f"--train-size {train_size:,} is more than the {rows['train']:,} rows of the training split; "
                         f"pass at most {rows['train']}, or 0 for all of them.")


def check_out_location(out: Path, written: Path) -> None:
    """Refuse an ``--out`` where ``written`` cannot be made: inside a file, or in a folder this
    user cannot write to."""
    existing = next((folder for folder in written.absolute().parents if folder.exists()), Path(written.absolute().anchor))
    if not existing.is_dir():
        raise UsageError(f"--out {out} lies inside {existing}, which is a file; choose a path inside a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable for you; choose a folder you can write to.")


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a saved model (single or sharded safetensors or PyTorch files, and their index)."""
    patterns = ("model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json")
    return sorted({path for pattern in patterns for path in folder.glob(pattern)})


def model_config(name: str, source: str = "--model", advice: str = PACKAGED_ADVICE) -> PretrainedConfig:
    """The config of the resolved model ``name``, or a UsageError saying why it cannot be loaded;
    ``source`` and ``advice`` word the message for where the name came from."""
    from transformers import AutoConfig

    location = Path(model_location(name))
    if location.is_dir():
        missing = [what for what, present in (("config.json", (location / "config.json").is_file()),
                                              ("weights (model.safetensors)", bool(weight_files(location)))) if not present]
        if missing:
            raise UsageError(f"{source} {name} is a folder without {' or '.join(missing)}, so not a model folder "
                             f"(save_pretrained writes config.json, model.safetensors and the tokenizer's files); {advice}.")
    try:
        return AutoConfig.from_pretrained(str(location))
    except (OSError, ValueError) as error:
        if location.is_dir():
            raise UsageError(f"{source} {name}: its config.json cannot be read ({error}); {advice}.") from None
        cache = " in the local cache ($HF_HUB_OFFLINE is set)" if hub_switched_off() else ""
        raise UsageError(f"{source} {name} is neither a model folder nor a model on the Hugging Face hub{cache}; "
                         f"{advice}.") from None


def check_tokenizer(name: str, source: str = "--model") -> None:
    """Load the model's tokenizer once, so a model folder without one fails before training."""
    try:
        load_tokenizer(name)
    except (OSError, ValueError) as error:
        raise UsageError(f"{source} {name} has no usable tokenizer ({error}); save the tokenizer beside the model "
                         f"(tokenizer.save_pretrained(folder)).") from None


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
        raise UsageError(f"--model {name} ({config.model_type}) cannot be built as a classifier with --pooling {pooling} "
                         f"({error}); adapterlib trains BERT-family models.") from None
    try:
        find_layers(model)
        if peft_config is not None:
            get_peft_model(model, peft_config)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--method {method} on --model {name}: {error}") from None
    return model


def model_fingerprint(name: str) -> str:
    """Which model a run starts from: the fingerprint of ``config.json`` and the weight files for
    the packaged model or a folder, of the name for a hub model."""
    location = Path(model_location(name))
    if not location.is_dir():
        return fingerprint(name)
    return fingerprint(location / "config.json", *weight_files(location))


def fingerprints(model_name: str, data_dir: str | None) -> dict[str, str]:
    return {"data_fingerprint": data_fingerprint(data_dir), "model_fingerprint": model_fingerprint(model_name)}


def save_trained(model, out: Path, record: dict) -> None:
    """The adapter checkpoint (PEFT methods) or the trained tensors (full, head), then metrics.json.

    Everything is written into a hidden folder beside ``out`` that is then renamed to ``out``, so
    ``out`` appears complete or not at all.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if isinstance(model, PeftModel):
            save_adapter(model, staging, base_model_name=record["model"])
        else:
            trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(trained, staging / TRAINED_TENSORS)
        (staging / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # checked empty before training
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging)
        raise


def command_train(args: argparse.Namespace) -> None:
    check_method_flags(args)
    options = method_options(args)
    method_config(args.method, options)
    resolve_precision(args.precision)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a new folder for the checkpoint.")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not an empty folder; choose a new directory.")
    check_out_location(out, out)
    if args.batch_size % process_count():
        raise UsageError(f"--batch-size: batch size {args.batch_size} does not split evenly over {process_count()} "
                         f"processes; choose a multiple of {process_count()}.")
    check_sources(args.model, args.data_dir)
    check_data(args.data_dir, args.train_size)
    model_name = resolve_model_name(args.model)
    check_method(model_name, model_config(model_name), args.method, options, args.pooling)
    check_tokenizer(model_name)
    from .compare import counted
    from .train import Recipe, changes_from_seed_recipe, train_and_evaluate

    recipe = Recipe(method=args.method, learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                    train_size=args.train_size or None, seed=args.seed, pooling=args.pooling,
                    method_options=method_options(args), precision=args.precision)
    model, record = train_and_evaluate(recipe, args.model, args.data_dir, progress=True,
                                       evaluate_each_epoch=args.evaluate_each_epoch)
    if not is_main_process():
        return
    record["changes_from_seed_recipe"] = changes_from_seed_recipe(recipe)
    record |= fingerprints(model_name, args.data_dir)
    save_trained(model, out, record)
    print(
        f"{record['method']}: validation accuracy {100 * record['accuracy']:.2f}% after {counted(recipe.epochs, 'epoch')} | "
        f"trainable {record['trainable_parameters']:,} of {record['total_parameters']:,} "
        f"({100 * record['trainable_fraction']:.2f}%) | {record['train_seconds']:.0f} s in {record['precision']} | saved to {out}"
    )


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``, or a UsageError saying the file is damaged and ``what`` to do."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is not valid JSON ({error}); {what}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{path} holds a JSON {type(value).__name__}, not an object; {what}")
    return value


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes in a safetensors file, read from its header; a UsageError when the file
    is truncated or not safetensors."""
    try:
        with safe_open(path, "pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise UsageError(f"{path} cannot be read ({error}): it is truncated or damaged; {RETRAIN}") from None


def trained_by(method: str, skeleton: nn.Module) -> dict[str, tuple[int, ...]]:
    """The parameters a full or head run trains, with their shapes, as ``train.prepare_model``
    sets them: all of them, or the classifier and (with ``cls`` pooling) BERT's pooler."""
    return {name: tuple(p.shape) for name, p in skeleton.named_parameters()
            if method == "full" or name.startswith(("classifier.", "bert.pooler."))}


def check_trained_tensors(path: Path, method: str, pooling: str, skeleton: nn.Module) -> None:
    """Refuse a ``model.safetensors`` that is not what a ``method`` run with ``pooling`` saves:
    another pooling (only ``cls`` trains BERT's pooler), another method, or another base model."""
    saved, needed = tensor_shapes(path), trained_by(method, skeleton)
    pooler = [any(name.startswith("bert.pooler.") for name in names) for names in (saved, needed)]
    if pooler[0] != pooler[1]:
        held = "holds a trained pooler (bert.pooler.*), which only --pooling cls trains" if pooler[0] else \
            "has no trained pooler (bert.pooler.*), which --pooling cls trains"
        raise UsageError(f"{path} {held}, but metrics.json records pooling {pooling!r}: {MIXED}")
    if saved.keys() != needed.keys():
        odd = sorted(saved.keys() ^ needed.keys())
        raise UsageError(f"{path} does not hold the tensors a --method {method} run trains ({len(odd)} differ, "
                         f"e.g. {odd[0]}): {MIXED}")
    other = next((name for name in needed if saved[name] != needed[name]), None)
    if other is not None:
        raise UsageError(f"{path}: {other} has shape {saved[other]}, but the base model needs {needed[other]}: "
                         f"it was trained on another base model.")


def check_checkpoint_files(directory: Path, record: dict) -> None:
    """The folder holds the files its method writes and no others, and they agree with metrics.json."""
    method = record["method"]
    present = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TRAINED_TENSORS) if (directory / name).exists()]
    belongs = (TRAINED_TENSORS,) if method in ("full", "head") else (CONFIG_FILE, WEIGHTS_FILE)
    stray = [name for name in present if name not in belongs]
    if stray:
        raise UsageError(f"{directory}: metrics.json says --method {method}, but the folder also holds {stray[0]}, "
                         f"which a --method {method} run does not write: {MIXED}")
    absent = [name for name in belongs if name not in present]
    if absent:
        raise UsageError(f"{directory} has no {absent[0]}, which a --method {method} checkpoint holds; {DAMAGED}")
    if method not in ("full", "head"):
        adapter = read_json(directory / CONFIG_FILE, DAMAGED).get("peft_config")
        described = adapter.get("method") if isinstance(adapter, dict) else None
        if described != method:
            raise UsageError(f"{directory / CONFIG_FILE} describes a {described} adapter, but metrics.json says "
                             f"--method {method}: {MIXED}")
        if record.get("peft_config") not in (None, adapter):
            raise UsageError(f"{directory / CONFIG_FILE} and metrics.json record different {method} configs: {MIXED}")
        tensor_shapes(directory / WEIGHTS_FILE)


def read_checkpoint(directory: Path) -> dict:
    """The ``metrics.json`` of a ``train`` output folder, after checking that the folder's files
    agree with it: the weights its method saves (and no others), readable, of the right shapes,
    for a base model and tokenizer that can be loaded."""
    if not directory.is_dir():
        raise UsageError(f"--checkpoint {directory} is not a folder; name the --out folder of `adapterlib train`.")
    metrics_file = directory / "metrics.json"
    if not metrics_file.is_file():
        raise UsageError(f"{directory} is not a checkpoint written by `adapterlib train` (no metrics.json).")
    record = read_json(metrics_file, DAMAGED)
    recipe = record.get("recipe")
    if not (isinstance(record.get("method"), str) and isinstance(record.get("model"), str)
            and isinstance(recipe, dict) and recipe.get("pooling") in POOLINGS):
        raise UsageError(f"{metrics_file} lacks the method, model or recipe (with its pooling) that `adapterlib train` "
                         f"records; {DAMAGED}")
    method_config(record["method"], {})  # a method this adapterlib knows
    check_checkpoint_files(directory, record)
    base, advice = "the base model named in metrics.json,", "predict needs the base model the checkpoint was trained on"
    config = model_config(record["model"], base, advice)
    if record["method"] in ("full", "head"):
        skeleton = classifier_skeleton(config, recipe["pooling"])
        check_trained_tensors(directory / TRAINED_TENSORS, record["method"], recipe["pooling"], skeleton)
    check_tokenizer(record["model"], base)
    return record


def load_checkpoint(directory: Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Rebuild the trained model from a ``train`` output directory (checked by :func:`read_checkpoint`)."""
    record = read_checkpoint(directory)
    base = load_classifier(record["model"], pooling=record["recipe"]["pooling"])
    if record["method"] in ("full", "head"):
        base.load_state_dict(load_file(directory / TRAINED_TENSORS), strict=False)
        model = base
    else:
        try:
            model = load_adapter(base, directory)
        except (OSError, ValueError) as error:  # the adapter's own checks: damaged, or trained on another base
            raise UsageError(str(error)) from None
    return model.eval(), load_tokenizer(record["model"])


def label_value(text: str, path: Path, line: int) -> int:
    """0 or 1 from a label column: ``0``/``1`` or the label's name, in any case."""
    value = LABEL_VALUES.get(text.strip().lower())
    if value is None:
        raise UsageError(f"--file {path}, line {line}: label {text!r} is not 0, 1, negative or positive.")
    return value


def read_inputs(args: argparse.Namespace) -> tuple[list[str], list[int] | None]:
    """Sentences from the command line or a file: one a line, or a TSV whose header names a
    ``sentence`` (or ``content``) column and perhaps a ``label`` column. UTF-8, a byte-order mark
    allowed; blank lines are skipped."""
    if args.file and args.text:
        raise UsageError("give sentences on the command line or in --file F, not both.")
    if not args.file:
        if not args.text:
            raise UsageError("give sentences to classify, or --file F.")
        return list(args.text), None
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"--file {path} {'is not a file' if path.exists() else 'does not exist'}.")
    try:
        lines = read_lines(path)
    except OSError as error:
        raise UsageError(f"--file {path} cannot be read ({error.strerror}).") from None
    except ValueError as error:  # not UTF-8: the message names the file and line
        raise UsageError(f"--file {error}") from None
    header = lines[0].split("\t") if lines else []
    column = next((c for c in ("sentence", "content") if c in header), None)
    if column is None:
        texts, labels = [line for line in lines if line.strip()], None
    else:
        texts, labels = [], [] if "label" in header else None
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise UsageError(f"--file {path}, line {number}: found {len(fields)} tab-separated fields where the "
                                 f"header names {len(header)}.")
            texts.append(fields[header.index(column)])
            if labels is not None:
                labels.append(label_value(fields[header.index("label")], path, number))
    if not texts:
        raise UsageError(f"--file {path} holds no sentences; write one sentence a line (or TSV rows under the header).")
    return texts, labels


def command_predict(args: argparse.Namespace) -> None:
    import torch

    texts, labels = read_inputs(args)
    model, tokenizer = load_checkpoint(Path(args.checkpoint))
    predictions = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start : start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            predictions += model(**batch).logits.argmax(-1).tolist()
    for prediction in predictions:
        print(LABEL_NAMES[prediction])
    if labels is not None:
        correct = sum(p == y for p, y in zip(predictions, labels))
        print(f"accuracy: {100 * correct / len(labels):.2f}% ({correct}/{len(labels)})")


def command_count(args: argparse.Namespace) -> None:
    """The counts in closed form, after the same checks as ``train``: the method is applied to
    the model's skeleton on the ``meta`` device first, so what ``train`` refuses is refused here."""
    check_method_flags(args)
    check_sources(args.model, None, uses_data=False)
    model_name = resolve_model_name(args.model)
    config = model_config(model_name)
    check_method(model_name, config, args.method, method_options(args), args.pooling)
    with_pooler = args.pooling == "cls"
    base = bert_parameter_count(config, num_labels=2, pooler=with_pooler)
    if args.method == "full":
        trainable, total = base, base
    elif args.method == "head":
        trainable, total = head_parameter_count(config, 2, with_pooler=with_pooler), base
    else:
        peft_config = peft_config_for(args.method, method_options(args))
        inserted = method_parameter_count(config, peft_config)
        head = head_parameter_count(config, 2)
        trainable, total = inserted + head, base + inserted + head
    print(f"trainable {trainable:,} | total {total:,} | fraction {100 * trainable / total:.4f}%")


GRID_SIZES = {"head": [{}], "full": [{}]} | {
    method.name: [{method.size.field: size} for size in method.size.grid] for method in methods()
}


def ran_in(record: dict) -> str:
    """The precision a result record ran in. Records from before the ``precision`` field name it
    ``mixed_precision``, with ``none`` for float32."""
    if "precision" in record:
        return record["precision"]
    mixed = record.get("mixed_precision", "none")
    return "fp32" if mixed == "none" else mixed


def run_key(recipe: dict, peft_config: dict | None, precision: str, prints: dict) -> str:
    """What makes two runs the same run: the recipe, the precision it ran in (``auto`` means bf16
    on one machine and fp32 on another), the full PEFT config, defaults included (so a changed
    default retrains instead of reusing an old result), and the fingerprints of the data and the
    model (``prints``; so a run on other data or another model is never taken for this one)."""
    return json.dumps({"recipe": recipe | {"precision": precision}, "peft_config": peft_config,
                       **{name: prints.get(name) for name in FINGERPRINTS}}, sort_keys=True)


def record_key(record: dict) -> str:
    return run_key(record["recipe"], record.get("peft_config"), ran_in(record), record)


def slot(record: dict) -> str:
    """Which cell of a grid a run fills: its method, method options and seed."""
    return json.dumps([record["method"], record["recipe"]["method_options"], record["recipe"]["seed"]], sort_keys=True)


def without_fingerprints(record: dict) -> str:
    """A record as text, fingerprints left out: results.json files written before records
    carried fingerprints list their runs without them."""
    return json.dumps({k: v for k, v in record.items() if k not in FINGERPRINTS}, sort_keys=True)


def read_runs(log: Path) -> list[dict]:
    """The records in ``runs.jsonl``, one JSON object a line."""
    if not log.exists():
        return []
    runs = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UsageError(f"{log}, line {number} is not JSON ({error}); repair or remove that line.") from None
        recipe = record.get("recipe") if isinstance(record, dict) else None
        if not isinstance(recipe, dict) or "method" not in record or not {"method_options", "seed"} <= recipe.keys():
            raise UsageError(f"{log}, line {number} is not a run record (method, recipe, ...); repair or remove that line.")
        runs.append(record)
    return runs


def other_settings(record: dict, settings: dict) -> list[str]:
    """How ``record`` was made differently from ``settings`` (train size, epochs, precision, data,
    model); a fingerprint a record lacks is not compared."""
    made = {"train_size": record["recipe"].get("train_size"), "epochs": record["recipe"].get("epochs"),
            "precision": ran_in(record), **{name: record.get(name) for name in FINGERPRINTS}}
    return [f"{SETTING_NAMES[name]} {made[name]} there, {settings[name]} here" for name in settings
            if made[name] != settings[name] and not (name in FINGERPRINTS and made[name] is None)]


def shown_runs(out: Path, done: list[dict], settings: dict) -> list[dict]:
    """The runs ``out/results.json`` shows (none without the file), after refusing a folder whose
    results a comparison with ``settings`` would drop: runs that ``done`` (runs.jsonl) lacks, or
    runs of another experiment."""
    results_file = out / "results.json"
    if not results_file.exists():
        return []
    shown = read_json(results_file, "move it away, or choose a new --out.").get("runs", [])
    logged = {without_fingerprints(r): r for r in done}
    unlogged = [r for r in shown if without_fingerprints(r) not in logged]
    if unlogged:
        raise UsageError(f"{out / 'runs.jsonl'} lacks runs that {results_file} shows ({len(unlogged)} of {len(shown)}); "
                         f"rewriting the results would drop them. Restore runs.jsonl, or choose a new --out.")
    differences = next((d for r in shown if (d := other_settings(logged[without_fingerprints(r)], settings))), None)
    if differences:
        raise UsageError(f"--out {out} holds the results of another experiment ({', '.join(differences)}); this command "
                         f"would drop them from results.json. Repeat its settings, or choose a new --out.")
    return shown


def command_compare(args: argparse.Namespace) -> None:
    """Run the grid (resumable: finished runs are kept in runs.jsonl), then write the results.

    One ``--out`` folder holds one experiment: one data set, one model, one train size, number of
    epochs and precision. ``results.json``, ``results.md`` and ``comparison.png`` show every
    finished run of it in ``runs.jsonl`` that this command would reuse, had it named the run's
    method, options and seed, whichever ``--methods`` and ``--seeds`` it names; a run shown
    before stays until a run of the same method, options and seed replaces it (after a default
    changed). So a smaller grid never drops a run from the table. A run made on other data,
    another model or with other settings stays in ``runs.jsonl``, neither reused nor shown; a
    folder whose ``results.json`` shows runs of another experiment (or runs that ``runs.jsonl``
    lacks) is refused before anything trains. When nothing new was trained and ``results.json``
    already shows exactly these runs, nothing is written.
    """
    unknown = sorted(set(args.methods) - set(GRID_SIZES))
    if unknown:
        raise UsageError(f"unknown methods {unknown}; choose from {', '.join(GRID_SIZES)}.")
    precision = resolve_precision(args.precision)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder for the results (a new one, or one `compare` wrote).")
    check_out_location(out, out / "results.json")
    check_data(args.data_dir, args.train_size)
    model_name = resolve_model_name(args.model)
    if not needs_hub(model_name):
        model_config(model_name)  # a folder is fingerprinted by its files: check they are there
    prints = fingerprints(model_name, args.data_dir)
    log, results_file = out / "runs.jsonl", out / "results.json"
    done = read_runs(log)
    settings = {"train_size": args.train_size or None, "epochs": args.epochs, "precision": precision, **prints}
    shown = shown_runs(out, done, settings)
    from .compare import counted, run_grid, write_results
    from .train import Recipe, train_and_evaluate

    def key(recipe: Recipe) -> str:
        return run_key(asdict(recipe), recipe.peft_config_dict(), precision, prints)

    def current(record: dict) -> bool:
        """Whether this command would reuse ``record``, had it asked for its method, options and seed."""
        try:
            recipe = Recipe(record["method"], epochs=args.epochs, train_size=args.train_size or None, precision=args.precision,
                            method_options=record["recipe"]["method_options"], seed=record["recipe"]["seed"])
            return key(recipe) == record_key(record)
        except (TypeError, ValueError):  # a method or an option that no longer exists
            return False

    finished = {record_key(r): r for r in done}
    recipes = [Recipe(method, epochs=args.epochs, train_size=args.train_size or None, method_options=options,
                      precision=args.precision)
               for method in args.methods for options in GRID_SIZES[method]]
    if any(key(dataclasses.replace(r, seed=seed)) not in finished for r in recipes for seed in args.seeds):
        check_sources(args.model, args.data_dir)
        config = model_config(model_name)
        for recipe in recipes:
            check_method(model_name, config, recipe.method, recipe.method_options, recipe.pooling)
        check_tokenizer(model_name)
    trained = []

    def train(recipe: Recipe) -> dict:
        if key(recipe) in finished:
            return finished[key(recipe)]
        _, record = train_and_evaluate(recipe, args.model, args.data_dir, progress=False)
        record |= prints
        finished[key(recipe)] = record  # a seed or method named twice trains once
        if is_main_process():
            out.mkdir(parents=True, exist_ok=True)
            with log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        trained.append(record)
        return record

    grid = run_grid(recipes, args.seeds, train)
    if not is_main_process():
        return
    replaced = {slot(r) for r in done + trained if current(r)}
    kept = {without_fingerprints(r) for r in shown if slot(r) not in replaced}
    records = list({record_key(r): r for r in done + trained if current(r) or without_fingerprints(r) in kept}.values())
    same_runs = sorted(map(without_fingerprints, shown)) == sorted(map(without_fingerprints, records))
    if not trained and results_file.exists() and same_runs:
        print(f"nothing new to train: all {counted(len(grid), 'run')} reused from {log}; {out} is unchanged")
        return
    write_results(records, out, args.command_line)
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'comparison.png'} "
          f"({counted(len(records), 'run')}, {len(trained)} new)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="adapterlib", description="Parameter-efficient fine-tuning of BERT on SST-2.")
    commands = parser.add_subparsers(dest="command", required=True)

    def method_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--method", choices=training_choices(), required=True)
        for field, flag in method_flags().items():
            defaults = {m.label: getattr(m.config_class(), field) for m in methods() if field in option_fields(m)}
            default = next(iter(defaults.values()))
            shown = ", ".join(f"{label} {' '.join(v) if isinstance(v, tuple) else v}" for label, v in defaults.items())
            described = f"{field.replace('_', ' ')} (default: {shown})"
            if isinstance(default, tuple):
                sub.add_argument(flag, nargs="+", help=described)
            elif isinstance(default, int):
                sub.add_argument(flag, type=int, help=described)
            else:
                choices = next(m.explorer_choices[field] for m in methods() if field in m.explorer_choices)
                sub.add_argument(flag, choices=choices, help=described)
        sub.add_argument("--pooling", choices=POOLINGS, default=DEFAULT_POOLING)
        sub.add_argument("--model", help="hub name or folder of a BERT-family model (default: the packaged MiniLM-L6)")

    def precision_argument(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="fp32 (default); bf16: bfloat16 autocast, float32 weights; auto: bf16 where the hardware has it")

    train = commands.add_parser("train", help="train and evaluate one method, save the checkpoint")
    method_arguments(train)
    train.add_argument("--lr", type=positive_float, help="learning rate (default: the method's recipe)")
    train.add_argument("--train-size", type=non_negative_int, default=2_000, help="training examples; 0 = the whole split")
    train.add_argument("--epochs", type=positive_float, default=3.0)
    train.add_argument("--batch-size", type=positive_int, default=16)
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument("--evaluate-each-epoch", action="store_true", help="also report validation accuracy after every epoch")
    precision_argument(train)
    train.add_argument("--data-dir", help="GLUE-format SST-2 folder (default: $ADAPTERLIB_SST2_DIR, else the hub)")
    train.add_argument("--out", required=True, help="new directory for the checkpoint and metrics.json")
    train.set_defaults(run=command_train)

    predict = commands.add_parser("predict", help="classify sentences with a trained checkpoint")
    predict.add_argument("--checkpoint", required=True, help="the --out folder of `adapterlib train`")
    predict.add_argument("text", nargs="*", help="sentences to classify (or --file)")
    predict.add_argument("--file", help="UTF-8 text, one sentence a line, or a TSV with a sentence column and "
                                        "optionally a label column (0/1 or negative/positive)")
    predict.set_defaults(run=command_predict)

    compare = commands.add_parser(
        "compare", help="train the grid of methods and sizes, write table and chart",
        description="Train every method at several sizes and seeds, then write results.json, results.md and "
                    "comparison.png into --out. Finished runs are kept in --out/runs.jsonl with fingerprints of the "
                    "data and the model, and reused when the same command (or a smaller grid) runs again. The table "
                    "shows every finished run of this data, model, train size, epochs and precision, whichever "
                    "--methods and --seeds are named (a run shown before stays until it is retrained); a folder "
                    "holding results of other settings is refused.")
    compare.add_argument("--methods", nargs="+", default=list(GRID_SIZES))
    compare.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    compare.add_argument("--train-size", type=non_negative_int, default=2_000, help="training examples; 0 = the whole split")
    compare.add_argument("--epochs", type=positive_float, default=3.0)
    precision_argument(compare)
    compare.add_argument("--model")
    compare.add_argument("--data-dir")
    compare.add_argument("--out", required=True, help="the results folder: new, or one `compare` wrote (it resumes)")
    compare.set_defaults(run=command_compare)

    count = commands.add_parser("count", help="trainable / total parameters without training")
    method_arguments(count)
    count.set_defaults(run=command_count)
    return parser


def report_error(prog: str, message: str) -> int:
    """Report a mistake: one line on stderr (a library's multi-line message joined), exit code 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args, unrecognized = parser.parse_known_args(argv)
    except SystemExit as stop:  # --help (0), or a mistake argparse found and reported (2)
        return stop.code
    prog = f"adapterlib {args.command}"
    if unrecognized:
        return report_error(prog, f"unrecognized arguments: {' '.join(unrecognized)}; `{prog} --help` lists the options.")
    args.command_line = " ".join(["adapterlib", *argv])
    try:
        args.run(args)
    except UsageError as error:
        return report_error(prog, str(error))
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {INTERRUPTED.get(args.command, 'nothing was changed')}", file=sys.stderr)
        return 130
    return 0
