"""The registry of PEFT methods: one file in this folder per method, found by name.

Each method file defines a config dataclass, the modules it inserts, and one :class:`Method`
object registered with :func:`register`. A method object answers four questions about its
config, and nothing else in the package needs to know which methods exist:

* :meth:`Method.check`: can this config be applied to this model? (raise, change nothing);
* :meth:`Method.insert`: put the modules of adapter ``name`` into the model;
* :meth:`Method.parameter_count`: how many parameters it inserts, in closed form from the shape;
* the names of its saved tensors: the parameter names of the modules it inserts, relative to
  the Transformer layer and the site (see :mod:`adapterlib.checkpoint`).

Beside the methods stand the two *baselines*, which insert nothing (:class:`Baseline`): ``full``
fine-tuning trains every weight, ``head`` trains the classification head alone. Together they are
what ``--method`` accepts (:func:`training_choices`), found by name with :func:`get_entry`.

Adding a method is adding a file here: every module in this folder is imported below, and the
command line, training, counting, the comparison grid and the explorer ask the registry at the
moment they need it (never a copy made at import), so a method registered later, from a test or a
notebook, is known everywhere. Each method lists ``examples``: configs that the registry's contract
test (``tests/test_registry_contract.py``) applies to a tiny BERT, so a new method is tested by
being registered.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
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
    examples: tuple[dict[str, Any], ...] = ({},)  # config fields of the configs the contract test tries
    seed_learning_rate: float | None = None  # the rate of the recipe the comparison started from, if any
    mergeable: ClassVar[bool] = False  # can the update be folded into the base weights?
    starts_at_base: ClassVar[bool] = True  # does the adapted model compute the base model's outputs at first?

    def example_configs(self) -> list[PeftConfig]:
        """Fresh config objects for :attr:`examples` (small enough for a 32-wide, 2-layer BERT)."""
        return [self.config_class(**fields) for fields in self.examples]

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

    def added_keys(self, config: PeftConfig) -> int:
        """Keys (and values) the method adds to every attention layer: 0, or a prefix's length.
        The memory estimate of a run (:func:`adapterlib.counting.peak_memory`) needs it."""
        return 0


def check_rank(r: int, limit: int, what: str) -> None:
    """Refuse a rank above ``limit``, the size of ``what`` (a bottleneck of width ``r`` or an ``r``-rank
    update is only smaller than the layer it changes while ``r <= limit``)."""
    if r > limit:
        raise ValueError(f"r={r} is larger than {what} ({limit}); choose 1 <= r <= {limit}.")


@dataclass(frozen=True)
class Baseline:
    """Training without a PEFT method: some of the classifier's own parameters train, the rest stay
    frozen; nothing is inserted."""

    name: str  # as on the command line: "full", "head"
    label: str  # as in tables and charts
    learning_rate: float  # default, chosen on the SST-2 tuning slice like the methods'
    trained_prefixes: tuple[str, ...] | None  # names of the parameters that train begin so; None: all
    marker: str = "o"
    seed_learning_rate: float | None = None
    size: ClassVar[None] = None  # nothing to size

    def trains(self, parameter_name: str) -> bool:
        """Whether the classifier's parameter ``parameter_name`` trains in this baseline."""
        return self.trained_prefixes is None or parameter_name.startswith(self.trained_prefixes)

    def freeze(self, model: nn.Module) -> nn.Module:
        """``model`` with exactly the parameters this baseline trains left trainable."""
        for name, parameter in model.named_parameters():
            parameter.requires_grad = self.trains(name)
        return model


REGISTRY: dict[str, Method] = {}
BASELINES: dict[str, Baseline] = {}


def register(method: Method) -> Method:
    if method.name in REGISTRY or method.name in BASELINES:
        raise ValueError(f"a method named {method.name!r} is registered already.")
    REGISTRY[method.name] = method
    return method


def register_baseline(baseline: Baseline) -> Baseline:
    if baseline.name in REGISTRY or baseline.name in BASELINES:
        raise ValueError(f"a method named {baseline.name!r} is registered already.")
    BASELINES[baseline.name] = baseline
    return baseline


def unregister(name: str) -> None:
    """Remove the method ``name`` (for a method registered for a while, as tests do)."""
    del REGISTRY[name]


def baselines() -> list[Baseline]:
    """The baselines, head alone first."""
    return list(BASELINES.values())


def entries() -> list[Method | Baseline]:
    """Every baseline, then every method: what results, tables and charts list, in this order."""
    return baselines() + methods()


def training_choices() -> tuple[str, ...]:
    """What ``--method`` accepts: every registered method, then the baselines."""
    return method_names() + tuple(BASELINES)


def get_entry(name: str) -> Method | Baseline:
    """The method or baseline called ``name``, or a ValueError listing the choices."""
    if name in BASELINES:
        return BASELINES[name]
    if name not in REGISTRY:
        raise ValueError(f"method {name!r} is not known; use one of: {', '.join(training_choices())}.")
    return REGISTRY[name]


def get_baseline(name: str) -> Baseline | None:
    """The baseline called ``name``; None for a PEFT method (or an unknown name)."""
    return BASELINES.get(name)


class ByName(Mapping):
    """A read-only ``{name: entry.attribute}`` view of the registry, methods and baselines, read at
    every lookup: a method registered after this view was made is in it."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __getitem__(self, name: str) -> Any:
        return getattr({entry.name: entry for entry in entries()}[name], self.attribute)

    def __iter__(self) -> Iterator[str]:
        return iter([entry.name for entry in entries()])

    def __len__(self) -> int:
        return len(entries())


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


register_baseline(
    Baseline(
        name="head",
        label="head only",
        learning_rate=3e-3,
        trained_prefixes=("classifier.", "bert.pooler."),  # the pooler exists with [CLS] pooling only
        marker="s",
        seed_learning_rate=1e-3,
    )
)
register_baseline(
    Baseline(
        name="full",
        label="full fine-tuning",
        learning_rate=5e-5,
        trained_prefixes=None,
        marker="*",
        seed_learning_rate=5e-5,
    )
)

# Every module in this folder is a method file; importing it registers its method.
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_module.name}")
