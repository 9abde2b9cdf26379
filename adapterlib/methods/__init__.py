"""The registry of PEFT methods: one file in this folder per method, found by name.

Each method file defines a config dataclass, the modules it inserts, and one :class:`Method`
object registered with :func:`register`. A method object answers four questions about its
config, and nothing else in the package needs to know which methods exist:

* :meth:`Method.check`: can this config be applied to this model? (raise, change nothing);
* :meth:`Method.insert`: put the modules of adapter ``name`` into the model;
* :meth:`Method.parameter_count`: how many parameters it inserts, in closed form from the shape;
* the names of its saved tensors: the parameter names of the modules it inserts, relative to
  the Transformer layer and the site (see :mod:`adapterlib.checkpoint`).

Adding a method is adding a file here: every module in this folder is imported below, and the
command line, training, counting, the comparison grid and the explorer ask :func:`methods`.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import nn

from ..config import PeftConfig


@dataclass(frozen=True)
class Size:
    """The config field that sets a method's size, and the sizes the comparison grid trains."""

    field: str  # e.g. "r" or "num_virtual_tokens"
    symbol: str  # how results name it: "r=16", "n=20"
    grid: tuple[int, ...]  # the sizes the comparison grid trains, the default first
    explorer_max: int | None = None  # the explorer's slider limit; None: the model's hidden size


@dataclass(frozen=True)
class Method:
    """What adapterlib knows about one PEFT method. Subclasses implement check, insert and count."""

    name: str  # as on the command line: "adapter", "lora", "prefix"
    label: str  # as in tables and charts: "LoRA"
    config_class: type[PeftConfig]
    learning_rate: float  # default, chosen on the SST-2 tuning slice (results/tuning.jsonl)
    size: Size | None = None  # None for a method with nothing to size (BitFit trains the biases there are)
    command_line_options: tuple[str, ...] = ()  # config fields the CLI may set, besides the size
    explorer_choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # config field: choices
    marker: str = "o"  # in the comparison chart
    mergeable: ClassVar[bool] = False  # can the update be folded into the base weights?

    def check(self, model: nn.Module, layers: list[nn.Module], config: PeftConfig) -> None:
        """Raise a clear error if ``config`` cannot be applied to ``model``; change nothing."""
        raise NotImplementedError

    def insert(
        self, model: nn.Module, layers: list[nn.Module], config: PeftConfig, adapter_name: str
    ) -> None:
        """Insert the modules of ``adapter_name`` (only called after :meth:`check` passed)."""
        raise NotImplementedError

    def parameter_count(self, model_config: Any, config: PeftConfig) -> int:
        """Parameters inserted into a model of this shape (BERT config field names), head excluded."""
        raise NotImplementedError


REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY:
        raise ValueError(f"a method named {method.name!r} is registered already.")
    REGISTRY[method.name] = method
    return method


def methods() -> list[Method]:
    """Every registered method, in the order their files are read."""
    return list(REGISTRY.values())


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_method(name: str) -> Method:
    if name not in REGISTRY:
        raise ValueError(f"method {name!r} is not known; use one of: {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def method_of(config: PeftConfig) -> Method:
    """The method a config object belongs to, or a TypeError naming the config classes."""
    for method in REGISTRY.values():
        if type(config) is method.config_class:
            return method
    names = ", ".join(m.config_class.__name__ for m in REGISTRY.values())
    from_peft = type(config).__module__.split(".")[0] == "peft"
    hint = (
        f" (peft's class; adapterlib has its own: from adapterlib import {type(config).__name__})"
        if from_peft
        else ""
    )
    raise TypeError(f"expected a PEFT config ({names}), got {type(config).__name__}{hint}.")


def config_from_dict(values: dict[str, Any]) -> PeftConfig:
    """Rebuild a config written by :meth:`PeftConfig.to_dict`."""
    values = dict(values)
    method = get_method(values.pop("method", None))
    return method.config_class.from_dict(values)


# Every module in this folder is a method file; importing it registers its method.
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")
