"""What every PEFT config shares, in the style of Hugging Face ``peft``.

A config only describes *what* to insert; :func:`adapterlib.get_peft_model` checks it against a
concrete model (hidden size, module names) before anything is changed. The config classes of
the methods live beside their modules, one file per method in :mod:`adapterlib.methods`.
Configs are checked when they are made and again when they are used (a field may have been
changed in between).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar


class TaskType(str, Enum):
    """What the wrapped model is used for; decides which head stays trainable."""

    SEQ_CLS = "SEQ_CLS"  # sequence classification: the `classifier` head is trained with the method
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"  # bare encoder: only the method's own parameters train


def check_positive_int(name: str, value: Any, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}. {hint}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}. {hint}")


def check_positive_number(name: str, value: Any, hint: str) -> None:
    """A finite number > 0 (an int or a float, not a string or a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}. {hint}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}. {hint}")


def check_dropout(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"dropout must be a number, got {type(value).__name__} {value!r}.")
    if not 0.0 <= value < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value}.")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}.")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not known; use one of: {', '.join(choices)}.")


@dataclass
class PeftConfig:
    """Fields shared by every method. ``method`` names the method in saved checkpoints."""

    method: ClassVar[str] = ""
    task_type: TaskType | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a clear error for a value the method cannot use. Subclasses extend it."""
        if self.task_type is not None:
            try:
                self.task_type = TaskType(self.task_type)
            except ValueError:
                options = ", ".join(t.value for t in TaskType)
                raise ValueError(
                    f"task_type {self.task_type!r} is not known; use one of: {options}."
                ) from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :func:`adapterlib.methods.config_from_dict` turns back into this config."""
        values = dataclasses.asdict(self)
        values["task_type"] = self.task_type.value if self.task_type else None
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return {"method": self.method, **values}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PeftConfig:
        """The config from :meth:`to_dict`'s fields; fields this version does not know are refused."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"method"})
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no fields {unknown}; the checkpoint was written by another version."
            )
        return cls(**{k: v for k, v in values.items() if k != "method"})


__all__ = ["TaskType", "PeftConfig"]
