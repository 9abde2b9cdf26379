"""Configuration dataclasses, one per PEFT method, in the style of Hugging Face ``peft``.

A config only describes *what* to insert; :func:`adapterlib.get_peft_model` checks it against
a concrete model (hidden size, module names) before anything is changed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar


class TaskType(str, Enum):
    """What the wrapped model is used for; decides which head stays trainable."""

    SEQ_CLS = "SEQ_CLS"  # sequence classification: the `classifier` head is trained with the method
    FEATURE_EXTRACTION = "FEATURE_EXTRACTION"  # bare encoder: only the method's own parameters train


PLACEMENTS = ("houlsby", "pfeiffer")
POSITIONS = ("after_layer_norm", "before_layer_norm")
ACTIVATIONS = ("relu", "gelu")


def _check_positive_int(name: str, value: Any, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}. {hint}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}. {hint}")


def _check_dropout(value: float) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {value}.")


@dataclass
class PeftConfig:
    """Fields shared by every method. ``method`` names the method in saved checkpoints."""

    method: ClassVar[str] = ""
    task_type: TaskType | None = None

    def __post_init__(self) -> None:
        if self.task_type is not None:
            try:
                self.task_type = TaskType(self.task_type)
            except ValueError:
                options = ", ".join(t.value for t in TaskType)
                raise ValueError(f"task_type {self.task_type!r} is not known; use one of: {options}.") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :func:`config_from_dict` turns back into this config."""
        values = dataclasses.asdict(self)
        values["task_type"] = self.task_type.value if self.task_type else None
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return {"method": self.method, **values}


@dataclass
class AdapterConfig(PeftConfig):
    """Bottleneck adapter ``h' = h + (alpha/r) * W_up act(W_down dropout(h))``.

    r: bottleneck width (1 <= r <= hidden size). alpha: scale numerator, ``s = alpha / r``.
    placement: ``"houlsby"`` (after attention and after the FFN) or ``"pfeiffer"`` (after the FFN only).
    position: what the adapter reads in a post-LayerNorm sub-layer ``LayerNorm(x + F(x))``:
    ``"after_layer_norm"`` its normalised output, ``"before_layer_norm"`` the projection ``F(x)``
    (Houlsby et al.'s drawing). Either way a zero ``W_up`` leaves the model unchanged at the start.

    Defaults chosen by measurement on the SST-2 tuning slice (seed recipe, MiniLM-L6, r=16,
    lr 1e-3, mean pooling; one standard error is about 1.1 points on 1,000 sentences):
    ``pfeiffer`` (Houlsby 85.9% vs Pfeiffer 85.5%: within noise, at half the parameters and one
    adapter per layer instead of two); dropout 0 (85.8% vs 85.5% with 0.1, and a faster step);
    ``after_layer_norm`` (86.8% vs 85.8% before it).
    """

    method: ClassVar[str] = "adapter"
    r: int = 16
    alpha: float = 16.0
    dropout: float = 0.0
    placement: str = "pfeiffer"
    position: str = "after_layer_norm"
    activation: str = "relu"
    bias: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("r", self.r, "The bottleneck width r is usually 8-64.")
        _check_dropout(self.dropout)
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement {self.placement!r} is not known; use one of: {', '.join(PLACEMENTS)}.")
        if self.position not in POSITIONS:
            raise ValueError(f"position {self.position!r} is not known; use one of: {', '.join(POSITIONS)}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not known; use one of: {', '.join(ACTIVATIONS)}.")


@dataclass
class LoraConfig(PeftConfig):
    """LoRA ``y = W x + b + (alpha/r) * B A dropout(x)`` on the Linear layers named in ``target_modules``.

    A target matches a Linear inside a Transformer layer whose layer-relative name equals it or ends
    with ``"." + target`` (``"query"`` matches ``attention.self.query``).
    """

    method: ClassVar[str] = "lora"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("query", "value")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("r", self.r, "The LoRA rank r is usually 4-64.")
        _check_dropout(self.dropout)
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        if not self.target_modules:
            raise ValueError("target_modules is empty; name at least one Linear layer, e.g. ('query', 'value').")


@dataclass
class PrefixTuningConfig(PeftConfig):
    """Prefix tuning: ``num_virtual_tokens`` trainable key and value vectors in every attention layer.

    With ``prefix_projection=True`` the prefixes are produced by a two-layer MLP
    (``encoder_hidden_size`` wide, default: the model's hidden size) from a smaller embedding,
    which Li & Liang (2021) found trains more stably.
    """

    method: ClassVar[str] = "prefix"
    num_virtual_tokens: int = 20
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None
    init_std: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive_int("num_virtual_tokens", self.num_virtual_tokens, "A prefix is usually 5-100 tokens.")
        if self.encoder_hidden_size is not None:
            _check_positive_int("encoder_hidden_size", self.encoder_hidden_size, "It is the MLP's hidden width.")


CONFIG_CLASSES: dict[str, type[PeftConfig]] = {
    cls.method: cls for cls in (AdapterConfig, LoraConfig, PrefixTuningConfig)
}


def config_from_dict(values: dict[str, Any]) -> PeftConfig:
    """Rebuild a config written by :meth:`PeftConfig.to_dict`."""
    values = dict(values)
    method = values.pop("method", None)
    if method not in CONFIG_CLASSES:
        raise ValueError(f"unknown method {method!r} in adapter config; expected one of {sorted(CONFIG_CLASSES)}.")
    names = {f.name for f in dataclasses.fields(CONFIG_CLASSES[method])}
    return CONFIG_CLASSES[method](**{k: v for k, v in values.items() if k in names})


__all__ = ["TaskType", "PeftConfig", "AdapterConfig", "LoraConfig", "PrefixTuningConfig", "config_from_dict"]
