"""What makes a training run the run it is: its recipe, its inputs resolved once, its key, the
fingerprints of its inputs, and the log of finished runs that the comparison grid and the rank
study resume from.

:class:`Recipe` is what a user chooses (method, sizes, learning rate, epochs, ...). A
:class:`RunSpec` is a recipe with everything it depends on resolved and checked once, on this
machine: the model's name (the packaged model, an absolute folder, or a hub name), the data folder,
the precision, the PEFT config and how many steps training takes. Training
(:func:`adapterlib.train.train_run`) takes a spec as it is and resolves nothing again.

A run is identified by :func:`run_key`: its recipe, the precision it ran in, its PEFT config with
every default written out, and the fingerprints of the data and of the base model
(:func:`fingerprints`). Two runs with equal keys are the same run, so a log of finished runs
(``runs.jsonl``, one JSON record a line, :func:`read_runs`) lets a rerun reuse them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import PeftConfig
from .data import data_fingerprint, data_rows, fingerprint, resolve_data_dir
from .methods import get_entry, training_choices
from .modeling import (
    DEFAULT_POOLING,
    DEFAULT_PRECISION,
    PRECISIONS,
    model_location,
    peft_config_for,
    process_count,
    resolve_model_name,
    resolve_precision,
    weight_files,
)
from .quantize import QUANTIZATIONS

FINGERPRINTS = ("data_fingerprint", "model_fingerprint")


@dataclass
class Recipe:
    """Everything that defines one training run."""

    method: str
    learning_rate: float | None = None  # None: the method's default
    epochs: float = 3.0
    batch_size: int = 16
    warmup_ratio: float = 0.0
    train_size: int | None = 2_000
    seed: int = 0
    pooling: str = DEFAULT_POOLING
    weight_decay: float = 0.0
    method_options: dict[str, Any] = field(default_factory=dict)
    precision: str = DEFAULT_PRECISION  # "fp32", "bf16" or "auto" (see adapterlib.train)
    base_quantization: str = (
        "none"  # "none", "int8" or "nf4": how the frozen base is stored (adapterlib.quantize)
    )

    def __post_init__(self) -> None:
        if self.method not in training_choices():
            raise ValueError(
                f"method {self.method!r} is not known; use one of: {', '.join(training_choices())}."
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision {self.precision!r} is not known; use one of: {', '.join(PRECISIONS)}."
            )
        if self.base_quantization not in QUANTIZATIONS:
            raise ValueError(
                f"base_quantization {self.base_quantization!r} is not known; "
                f"use one of: {', '.join(QUANTIZATIONS)}."
            )
        if (
            self.base_quantization != "none"
            and getattr(get_entry(self.method), "trained_prefixes", ()) is None
        ):
            raise ValueError(
                f"{self.method} trains every weight, but a quantized base is frozen; use base_quantization='none'."
            )
        if self.learning_rate is None:
            self.learning_rate = get_entry(self.method).learning_rate

    def peft_config(self) -> PeftConfig | None:
        return peft_config_for(self.method, self.method_options)

    def peft_config_dict(self) -> dict[str, Any] | None:
        """The full PEFT config as saved in result records, defaults included; None for a baseline."""
        config = self.peft_config()
        return None if config is None else config.to_dict()


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """Optimizer steps in one pass over ``examples`` at global batch ``batch_size`` (the last batch may be smaller)."""
    return math.ceil(examples / batch_size)


def steps_trained(epochs: float, steps_in_epoch: int) -> int:
    """The steps the ``Trainer`` takes for ``epochs``: whole steps, a started step counted whole."""
    return math.ceil(epochs * steps_in_epoch - 1e-9)


@dataclass(frozen=True)
class RunSpec:
    """One training run with every input resolved and checked once; training takes it as it is."""

    recipe: Recipe
    model_name: str  # resolved: the packaged name, an absolute folder or a hub name
    data_dir: Path | None  # resolved: an absolute folder, or None for the hub
    precision: str  # resolved on this machine: fp32, bf16 or fp16
    peft_config: PeftConfig | None  # None for a baseline
    train_examples: int  # the rows that train
    evaluate_on: str = "validation"  # or "tuning": the tuning slice of the training split

    @classmethod
    def resolve(
        cls,
        recipe: Recipe,
        model_name: str | None = None,
        data_dir: str | Path | None = None,
        evaluate_on: str = "validation",
        device: str | None = None,
        train_rows: int | None = None,
    ) -> RunSpec:
        """Resolve and check ``recipe``'s inputs: a ValueError for what cannot train. ``train_rows``:
        the rows of the training split, when the data were checked already (else they are read)."""
        if evaluate_on not in ("validation", "tuning"):
            raise ValueError("evaluate_on must be 'validation' or 'tuning'.")
        processes = process_count()
        if recipe.batch_size % processes:
            raise ValueError(
                f"batch size {recipe.batch_size} does not split evenly over {processes} processes; "
                f"choose a multiple of {processes}."
            )
        folder = resolve_data_dir(data_dir)
        rows = data_rows(folder)["train"] if train_rows is None else train_rows
        if recipe.train_size is not None and recipe.train_size > rows:
            raise ValueError(
                f"train size {recipe.train_size:,} is more than the {rows:,} rows of the training split; "
                f"pass at most {rows}, or 0 for all of them."
            )
        examples = recipe.train_size or rows
        check_epochs(recipe.epochs, examples, recipe.batch_size)
        return cls(
            recipe=recipe,
            model_name=resolve_model_name(model_name),
            data_dir=folder,
            precision=resolve_precision(recipe.precision, device),
            peft_config=recipe.peft_config(),
            train_examples=examples,
            evaluate_on=evaluate_on,
        )

    @property
    def steps_in_epoch(self) -> int:
        return steps_per_epoch(self.train_examples, self.recipe.batch_size)

    @property
    def steps(self) -> int:
        """The optimizer steps training takes."""
        return steps_trained(self.recipe.epochs, self.steps_in_epoch)

    @property
    def epochs_trained(self) -> float:
        """The epochs those steps make: ``recipe.epochs``, or more where it ends inside a step."""
        return self.steps / self.steps_in_epoch


def check_epochs(epochs: float, examples: int, batch_size: int) -> None:
    """Refuse a number of epochs shorter than one optimizer step."""
    per_epoch = steps_per_epoch(examples, batch_size)
    if epochs * per_epoch < 1 - 1e-9:
        least = 1 / per_epoch
        raise ValueError(
            f"{epochs:g} epochs is less than one step ({per_epoch} step{'s' * (per_epoch != 1)} an epoch: "
            f"{examples:,} examples at batch size {batch_size}); pass at least {least:g} "
            f"epoch{'s' * (least != 1)}."
        )


def model_fingerprint(name: str) -> str:
    """Which model a run starts from: the fingerprint of ``config.json`` and the weight files for
    the packaged model or a folder, of the name for a hub model."""
    location = Path(model_location(name))
    if not location.is_dir():
        return fingerprint(name)
    return fingerprint(location / "config.json", *weight_files(location))


def fingerprints(model_name: str, data_dir: str | Path | None) -> dict[str, str]:
    """``{"data_fingerprint": ..., "model_fingerprint": ...}`` of a run's inputs."""
    return {
        "data_fingerprint": data_fingerprint(data_dir),
        "model_fingerprint": model_fingerprint(model_name),
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
    model (``prints``; so a run on other data or another model is never taken for this one). A float
    base (``base_quantization`` "none") is left out, so runs from before that field keep their keys."""
    recipe = {k: v for k, v in recipe.items() if (k, v) != ("base_quantization", "none")}
    return json.dumps(
        {
            "recipe": recipe | {"precision": precision},
            "peft_config": peft_config,
            **{name: prints.get(name) for name in FINGERPRINTS},
        },
        sort_keys=True,
    )


def record_key(record: dict) -> str:
    """The :func:`run_key` of a finished run's record."""
    return run_key(record["recipe"], record.get("peft_config"), ran_in(record), record)


def is_run_record(record: object) -> bool:
    """Whether ``record`` has the fields every result record has: a method and a recipe with
    method options and a seed."""
    recipe = record.get("recipe") if isinstance(record, dict) else None
    return (
        isinstance(recipe, dict)
        and isinstance(record.get("method"), str)
        and isinstance(recipe.get("method_options"), dict)
        and "seed" in recipe
    )


def read_runs(log: Path) -> list[dict]:
    """The records in ``log`` (``runs.jsonl``: one JSON object a line; none if it does not exist),
    or a ValueError naming the file and the first line that is not a run record."""
    if not log.exists():
        return []
    runs = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{log}, line {number} is not JSON ({error}); repair or remove that line."
            ) from None
        if not is_run_record(record):
            raise ValueError(
                f"{log}, line {number} is not a run record (method, recipe, ...); repair or remove that line."
            )
        runs.append(record)
    return runs


__all__ = [
    "FINGERPRINTS",
    "Recipe",
    "RunSpec",
    "check_epochs",
    "fingerprints",
    "is_run_record",
    "model_fingerprint",
    "ran_in",
    "read_runs",
    "record_key",
    "run_key",
    "steps_per_epoch",
    "steps_trained",
]
