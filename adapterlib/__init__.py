"""adapterlib: parameter-efficient fine-tuning of Transformers, written out to be read.

Bottleneck adapters, LoRA and prefix tuning, inserted into Hugging Face BERT-family models and
into a toy Transformer layer, with an API shaped like Hugging Face ``peft``.
"""

from . import toy
from .bottleneck import BottleneckAdapter
from .checkpoint import load_adapter, save_adapter
from .config import AdapterConfig, LoraConfig, PeftConfig, PrefixTuningConfig, TaskType
from .counting import (
    ParameterCount,
    bert_parameter_count,
    count_parameters,
    expected_trainable_parameters,
    head_parameter_count,
    method_parameter_count,
    print_trainable_parameters,
)
from .lora import LoraLinear, LoraUpdate
from .peft_model import PeftModel, PeftModelForSequenceClassification, get_peft_model
from .prefix import PrefixEncoder, PrefixSelfAttention

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig",
    "BottleneckAdapter",
    "LoraConfig",
    "LoraLinear",
    "LoraUpdate",
    "ParameterCount",
    "PeftConfig",
    "PeftModel",
    "PeftModelForSequenceClassification",
    "PrefixEncoder",
    "PrefixSelfAttention",
    "PrefixTuningConfig",
    "TaskType",
    "bert_parameter_count",
    "count_parameters",
    "expected_trainable_parameters",
    "get_peft_model",
    "head_parameter_count",
    "load_adapter",
    "method_parameter_count",
    "print_trainable_parameters",
    "save_adapter",
    "toy",
]
