"""The ``predict`` command: reading a ``train`` output folder back, and the sentences to classify.

Before any weight is loaded, the folder is checked against its ``metrics.json``: the files its
method writes and no others, readable, of the shapes the base model needs, for a base model and
tokenizer that can be loaded (:func:`read_checkpoint`). A folder that fails is refused with what
is wrong, in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_adapter
from ..data import LABEL_NAMES, read_lines
from ..methods import get_baseline
from ..modeling import POOLINGS, load_classifier, load_tokenizer
from .checks import (
    UsageError,
    check_sources,
    check_tokenizer,
    classifier_skeleton,
    method_config,
    model_config,
    read_json,
)
from .train_command import TRAINED_TENSORS

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedTokenizerBase

LABEL_VALUES = {"0": 0, "1": 1, "negative": 0, "positive": 1}
RETRAIN = "train again into a new folder."
DAMAGED = f"the checkpoint is damaged; {RETRAIN}"
MIXED = f"the files come from different runs; {RETRAIN}"


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes in a safetensors file, read from its header; a UsageError when the file
    is truncated or not safetensors."""
    try:
        with safe_open(path, "pt") as handle:
            return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise UsageError(f"{path} cannot be read ({error}): it is truncated or damaged; {RETRAIN}") from None


def trained_by(method: str, skeleton: nn.Module) -> dict[str, tuple[int, ...]]:
    """The parameters a baseline run trains, with their shapes, as the registry's baseline says
    (``full``: all of them; ``head``: the classifier and, with ``cls`` pooling, BERT's pooler)."""
    baseline = get_baseline(method)
    return {name: tuple(p.shape) for name, p in skeleton.named_parameters() if baseline.trains(name)}


def check_trained_tensors(path: Path, method: str, pooling: str, skeleton: nn.Module) -> None:
    """Refuse a ``model.safetensors`` that is not what a ``method`` run with ``pooling`` saves:
    another pooling (only ``cls`` trains BERT's pooler), another method, or another base model."""
    saved, needed = tensor_shapes(path), trained_by(method, skeleton)
    pooler = [any(name.startswith("bert.pooler.") for name in names) for names in (saved, needed)]
    if pooler[0] != pooler[1]:
        held = (
            "holds a trained pooler (bert.pooler.*), which only --pooling cls trains"
            if pooler[0]
            else "has no trained pooler (bert.pooler.*), which --pooling cls trains"
        )
        raise UsageError(f"{path} {held}, but metrics.json records pooling {pooling!r}: {MIXED}")
    if saved.keys() != needed.keys():
        odd = sorted(saved.keys() ^ needed.keys())
        raise UsageError(
            f"{path} does not hold the tensors a --method {method} run trains ({len(odd)} differ, "
            f"e.g. {odd[0]}): {MIXED}"
        )
    other = next((name for name in needed if saved[name] != needed[name]), None)
    if other is not None:
        raise UsageError(
            f"{path}: {other} has shape {saved[other]}, but the base model needs {needed[other]}: "
            f"it was trained on another base model."
        )


def check_checkpoint_files(directory: Path, record: dict) -> None:
    """The folder holds the files its method writes and no others, and they agree with metrics.json."""
    method = record["method"]
    present = [name for name in (CONFIG_FILE, WEIGHTS_FILE, TRAINED_TENSORS) if (directory / name).exists()]
    baseline = get_baseline(method) is not None
    belongs = (TRAINED_TENSORS,) if baseline else (CONFIG_FILE, WEIGHTS_FILE)
    stray = [name for name in present if name not in belongs]
    if stray:
        raise UsageError(
            f"{directory}: metrics.json says --method {method}, but the folder also holds {stray[0]}, "
            f"which a --method {method} run does not write: {MIXED}"
        )
    absent = [name for name in belongs if name not in present]
    if absent:
        raise UsageError(
            f"{directory} has no {absent[0]}, which a --method {method} checkpoint holds; {DAMAGED}"
        )
    if not baseline:
        adapter = read_json(directory / CONFIG_FILE, DAMAGED).get("peft_config")
        described = adapter.get("method") if isinstance(adapter, dict) else None
        if described != method:
            raise UsageError(
                f"{directory / CONFIG_FILE} describes a {described} adapter, but metrics.json says "
                f"--method {method}: {MIXED}"
            )
        if record.get("peft_config") not in (None, adapter):
            raise UsageError(
                f"{directory / CONFIG_FILE} and metrics.json record different {method} configs: {MIXED}"
            )
        tensor_shapes(directory / WEIGHTS_FILE)


def read_checkpoint(directory: Path) -> dict:
    """The ``metrics.json`` of a ``train`` output folder, after checking that the folder's files
    agree with it: the weights its method saves (and no others), readable, of the right shapes,
    for a base model and tokenizer that can be loaded."""
    if not directory.is_dir():
        raise UsageError(
            f"--checkpoint {directory} is not a folder; name the --out folder of `adapterlib train`."
        )
    metrics_file = directory / "metrics.json"
    if not metrics_file.is_file():
        raise UsageError(f"{directory} is not a checkpoint written by `adapterlib train` (no metrics.json).")
    record = read_json(metrics_file, DAMAGED)
    recipe = record.get("recipe")
    if not (
        isinstance(record.get("method"), str)
        and isinstance(record.get("model"), str)
        and isinstance(recipe, dict)
        and recipe.get("pooling") in POOLINGS
    ):
        raise UsageError(
            f"{metrics_file} lacks the method, model or recipe (with its pooling) that `adapterlib train` "
            f"records; {DAMAGED}"
        )
    method_config(record["method"], {})  # a method this adapterlib knows
    check_checkpoint_files(directory, record)
    base, advice = (
        "the base model named in metrics.json,",
        "predict needs the base model the checkpoint was trained on",
    )
    check_sources(
        record["model"], None, uses_data=False, source=base, advice=advice
    )  # no hub: one line, at once
    config = model_config(record["model"], base, advice)
    if get_baseline(record["method"]) is not None:
        skeleton = classifier_skeleton(config, recipe["pooling"])
        check_trained_tensors(directory / TRAINED_TENSORS, record["method"], recipe["pooling"], skeleton)
    check_tokenizer(record["model"], base)
    return record


def load_checkpoint(directory: Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Rebuild the trained model from a ``train`` output directory (checked by :func:`read_checkpoint`)."""
    record = read_checkpoint(directory)
    base = load_classifier(record["model"], pooling=record["recipe"]["pooling"])
    if get_baseline(record["method"]) is not None:
        base.load_state_dict(load_file(directory / TRAINED_TENSORS), strict=False)
        model = base
    else:
        try:
            model = load_adapter(base, directory)
        except (
            OSError,
            ValueError,
        ) as error:  # the adapter's own checks: damaged, or trained on another base
            raise UsageError(str(error)) from None
    return model.eval(), load_tokenizer(record["model"])


def label_value(text: str, path: Path, line: int) -> int:
    """0 or 1 from a label column: ``0``/``1`` or the label's name, in any case."""
    value = LABEL_VALUES.get(text.strip().lower())
    if value is None:
        raise UsageError(
            f"--file {path}, line {line}: label {text!r} is not 0, 1, negative or positive (a line with a "
            f"tab is sentence<TAB>label; a header must name a sentence column)."
        )
    return value


SENTENCE_COLUMNS = ("sentence", "content")


def header_columns(line: str) -> list[str] | None:
    """The column names of a header line (lower case), or None if ``line`` is no header: a header
    names a ``sentence`` (or ``content``) column, in any case."""
    names = [field.strip().lower() for field in line.split("\t")]
    return names if any(c in names for c in SENTENCE_COLUMNS) else None


def read_rows(path: Path, lines: list[str]) -> tuple[list[str], list[int] | None]:
    """Sentences and labels from the lines of ``--file``, by this rule:

    1. a first line that names a ``sentence`` (or ``content``) column, in any case, is a header:
       every row then has the header's number of tab-separated fields, the sentence is in that
       column and the label in a ``label`` column if there is one;
    2. else, if any line holds a tab, every line is ``sentence<TAB>label`` (no header), the label
       0, 1, negative or positive;
    3. else every line is one sentence.

    Blank lines are skipped.
    """
    header = header_columns(lines[0]) if lines else None
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if header is not None:
        column = next(c for c in SENTENCE_COLUMNS if c in header)
        texts, labels = [], [] if "label" in header else None
        for number, line in numbered[1:]:
            fields = line.split("\t")
            if len(fields) != len(header):
                raise UsageError(
                    f"--file {path}, line {number}: found {len(fields)} tab-separated fields where the "
                    f"header names {len(header)}."
                )
            texts.append(fields[header.index(column)])
            if labels is not None:
                labels.append(label_value(fields[header.index("label")], path, number))
        return texts, labels
    if not any("\t" in line for _, line in numbered):
        return [line for _, line in numbered], None
    texts, labels = [], []
    for number, line in numbered:
        text, tab, label = line.rpartition("\t")
        if not tab:
            raise UsageError(
                f"--file {path}, line {number} has no tab, but other lines do: a file with tabs holds "
                f"sentence<TAB>label rows (under a header naming a sentence column, or none)."
            )
        texts.append(text)
        labels.append(label_value(label, path, number))
    return texts, labels


def read_inputs(args: argparse.Namespace) -> tuple[list[str], list[int] | None]:
    """Sentences from the command line or a file (UTF-8, a byte-order mark allowed), read by the
    rule of :func:`read_rows`."""
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
    texts, labels = read_rows(path, lines)
    if not texts:
        raise UsageError(
            f"--file {path} holds no sentences; write one sentence a line (or TSV rows under the header)."
        )
    return texts, labels


def command_predict(args: argparse.Namespace) -> None:
    import torch

    texts, labels = read_inputs(args)
    model, tokenizer = load_checkpoint(Path(args.checkpoint))
    predictions = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            predictions += model(**batch).logits.argmax(-1).tolist()
    for prediction in predictions:
        print(LABEL_NAMES[prediction])
    if labels is not None:
        correct = sum(p == y for p, y in zip(predictions, labels))
        print(f"accuracy: {100 * correct / len(labels):.2f}% ({correct}/{len(labels)})")
