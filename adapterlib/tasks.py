"""Tasks as data: a sentence-classification task is a folder of TSV files and a few facts about it.

A task folder holds ``train.tsv`` and an evaluation file: ``dev.tsv`` where there is one (GLUE's
layout, as for SST-2), else ``test.tsv`` (the SentEval tasks have no dev split). Every file is
UTF-8 text with the header ``sentence<TAB>label`` and one example a line, its label a class
number ``0 .. C-1``. Files are read with ``csv.QUOTE_NONE`` and nothing is taken for a missing
value, so a quote character is part of a sentence and a sentence such as ``null`` stays a string.
Hyper-parameters are chosen on slices of ``train.tsv`` only; the evaluation file gives the
final number.

:data:`TASKS` lists the four known tasks by name, with their folders relative to a *data root*,
the folder that holds ``sst2/`` and ``senteval/`` (an argument, else ``$ADAPTERLIB_DATA_ROOT``).
Any other folder in this layout is a task too (:func:`folder_task`); its number of classes is
read from its training labels. Every file is checked row by row before it is used, and a
problem is reported in one line that names the file and the line.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .data import HEADER, fingerprint, read_lines

if TYPE_CHECKING:
    from datasets import DatasetDict

DATA_ROOT_VARIABLE = "ADAPTERLIB_DATA_ROOT"
TRAIN_FILE = "train.tsv"
EVALUATION_FILES = ("dev.tsv", "test.tsv")  # the first one a folder has is its evaluation file


@dataclass(frozen=True)
class Task:
    """One sentence-classification task.

    ``folder``: relative to the data root for a known task, absolute for a folder named directly.
    ``label_names[c]`` names class ``c``; ``evaluation_file`` is ``dev.tsv`` or ``test.tsv``.
    """

    name: str
    folder: str
    label_names: tuple[str, ...]
    evaluation_file: str = "dev.tsv"

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def path(self, data_root: str | os.PathLike | None = None) -> Path:
        """The task's folder: its own absolute path, or its place under the data root."""
        folder = Path(self.folder)
        return folder if folder.is_absolute() else resolve_data_root(data_root) / folder


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("sst2", "sst2", ("negative", "positive"), "dev.tsv"),
        Task("trec", "senteval/trec", ("DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"), "test.tsv"),
        Task("subj", "senteval/subj", ("subjective", "objective"), "test.tsv"),
        Task("cr", "senteval/cr", ("negative", "positive"), "test.tsv"),
    )
}


@dataclass(frozen=True)
class Split:
    """The examples of one file, in file order."""

    sentences: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The folder holding ``sst2/`` and ``senteval/``: the argument, else ``$ADAPTERLIB_DATA_ROOT``."""
    chosen = data_root or os.environ.get(DATA_ROOT_VARIABLE)
    if not chosen:
        raise FileNotFoundError(
            f"no data root: pass data_root= (or set ${DATA_ROOT_VARIABLE}) to the folder that holds sst2/ "
            "and senteval/, e.g. ../shared/data."
        )
    return Path(chosen).expanduser().absolute()


def get_task(name: str) -> Task:
    """A known task by name, or a folder task when ``name`` is a path to a folder (:func:`folder_task`)."""
    if name in TASKS:
        return TASKS[name]
    if os.sep in name or "/" in name or Path(name).is_dir():
        return folder_task(name)
    raise ValueError(
        f"task {name!r} is not known; use one of: {', '.join(TASKS)}, or name a folder (a path with a '/', "
        f"e.g. ./mytask) that holds {TRAIN_FILE} and {' or '.join(EVALUATION_FILES)}."
    )


def folder_task(folder: str | os.PathLike) -> Task:
    """Any folder in the layout above as a task named after the folder; its classes are the
    labels of its ``train.tsv``, which must be every number ``0 .. C-1`` (named ``"0"``, ``"1"``...)."""
    folder = Path(folder).expanduser().absolute()
    evaluation_file = evaluation_file_of(folder)
    classes = max(read_tsv(folder / TRAIN_FILE).labels) + 1
    return Task(folder.name, str(folder), tuple(str(c) for c in range(classes)), evaluation_file)


def evaluation_file_of(folder: Path) -> str:
    """``dev.tsv`` if ``folder`` has one, else ``test.tsv``; a FileNotFoundError if a file is missing."""
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(f"task folder {folder} {state}.")
    if not (folder / TRAIN_FILE).is_file():
        raise FileNotFoundError(
            f"task folder {folder} has no {TRAIN_FILE}; a task folder holds the training file."
        )
    for name in EVALUATION_FILES:
        if (folder / name).is_file():
            return name
    raise FileNotFoundError(
        f"task folder {folder} has neither {' nor '.join(EVALUATION_FILES)}; add the evaluation file."
    )


def read_tsv(path: Path, num_classes: int | None = None, every_class: bool = True) -> Split:
    """Read and check one TSV: the header, two fields a row, an integer label ``0 .. C-1``.

    ``num_classes`` = C when known; None reads it from the labels. ``every_class``: refuse a file
    in which a class has no example (right for a training file; an evaluation file may lack one).
    Blank lines are skipped. Any problem is a ValueError naming the file and the line.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; a task folder holds {TRAIN_FILE} and an evaluation file."
        )
    lines = read_lines(path)  # also refuses bytes that are not UTF-8, naming the line
    if not lines:
        raise ValueError(
            f"{path} is empty; it needs the header 'sentence<TAB>label' and one row per sentence."
        )
    if lines[0] != HEADER:
        raise ValueError(f"{path}, line 1: header is {lines[0]!r}; expected 'sentence<TAB>label'.")
    sentences, labels = [], []
    rows = csv.reader(lines[1:], delimiter="\t", quoting=csv.QUOTE_NONE)
    for number, fields in enumerate(rows, start=2):
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(
                f"{path}, line {number}: expected 2 tab-separated fields, the sentence and its label; "
                f"found {len(fields)} (a tab inside a sentence must go)."
            )
        sentence, label = fields
        if not label.isdecimal() or str(int(label)) != label:
            raise ValueError(f"{path}, line {number}: label {label!r} is not a class number 0, 1, 2, ...")
        if num_classes is not None and int(label) >= num_classes:
            raise ValueError(
                f"{path}, line {number}: label {label} is not one of the classes 0..{num_classes - 1}."
            )
        sentences.append(sentence)
        labels.append(int(label))
    if not labels:
        raise ValueError(
            f"{path} has the header but no rows; add one row per sentence: the sentence, a tab, its label."
        )
    classes = num_classes if num_classes is not None else max(labels) + 1
    missing = sorted(set(range(classes)) - set(labels))
    if every_class and missing:
        raise ValueError(
            f"{path}: labels must be the classes 0..{classes - 1}, each with examples; "
            f"class {', '.join(map(str, missing))} has none (renumber the labels from 0 without gaps)."
        )
    return Split(sentences, labels)


def read_task(task: Task | str, data_root: str | os.PathLike | None = None) -> dict[str, Split]:
    """``{"train": ..., "evaluation": ...}`` of a task (a :class:`Task` or a name for :func:`get_task`),
    every row checked."""
    task = get_task(task) if isinstance(task, str) else task
    folder = task.path(data_root)
    evaluation_file_of(folder)  # a missing folder or file in one clear line
    return {
        "train": read_tsv(folder / TRAIN_FILE, task.num_classes),
        "evaluation": read_tsv(folder / task.evaluation_file, task.num_classes, every_class=False),
    }


def task_fingerprint(task: Task | str, data_root: str | os.PathLike | None = None) -> str:
    """Which data a task reads: 12 hex digits of a sha256 over its training and evaluation files."""
    task = get_task(task) if isinstance(task, str) else task
    folder = task.path(data_root)
    evaluation_file_of(folder)
    return fingerprint(folder / TRAIN_FILE, folder / task.evaluation_file)


def load_task(task: Task | str, data_root: str | os.PathLike | None = None) -> DatasetDict:
    """A task as a ``DatasetDict`` shaped like :func:`adapterlib.data.load_sst2`'s: ``train`` and
    ``validation`` (the evaluation file) with columns ``sentence``, ``label`` (a ``ClassLabel``
    with the task's label names) and ``idx``."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    task = get_task(task) if isinstance(task, str) else task
    features = Features(
        {
            "sentence": Value("string"),
            "label": ClassLabel(names=list(task.label_names)),
            "idx": Value("int64"),
        }
    )
    splits = read_task(task, data_root)
    return DatasetDict(
        {
            name: Dataset.from_dict(
                {"sentence": split.sentences, "label": split.labels, "idx": list(range(len(split)))},
                features=features,
            )
            for name, split in (("train", splits["train"]), ("validation", splits["evaluation"]))
        }
    )
