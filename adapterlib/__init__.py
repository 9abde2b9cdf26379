"""adapterlib: parameter-efficient fine-tuning of Transformers, written out to be read.

Bottleneck adapters, LoRA and prefix tuning, and beside them BitFit, (IA)³, the parallel adapter
and DoRA, inserted into Hugging Face BERT-family models and into a toy Transformer layer, with an
API shaped like Hugging Face ``peft``.
"""

from . import toy
from .checkpoint import load_adapter, save_adapter
from .config import PeftConfig, TaskType
from .counting import (
    ParameterCount,
    bert_parameter_count,
    count_parameters,
    expected_trainable_parameters,
    head_parameter_count,
    method_parameter_count,
    print_trainable_parameters,
)
from .methods import get_method, method_names, methods
from .methods.adapter import AdapterConfig, BottleneckAdapter
from .methods.bitfit import BitFitConfig
from .methods.dora import DoraConfig
from .methods.ia3 import IA3Config
from .methods.lora import LoraConfig, LoraLinear, LoraUpdate
from .methods.parallel import ParallelAdapter, ParallelAdapterConfig
from .methods.prefix import PrefixEncoder, PrefixSelfAttention, PrefixTuningConfig
from .peft_model import PeftModel, PeftModelForSequenceClassification, get_peft_model

__version__ = "0.1.0"

__all__ = [
    "AdapterConfig",
    "BitFitConfig",
    "BottleneckAdapter",
    "DoraConfig",
    "IA3Config",
    "LoraConfig",
    "LoraLinear",
    "LoraUpdate",
    "ParallelAdapter",
    "ParallelAdapterConfig",
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
    "get_method",
    "get_peft_model",
    "head_parameter_count",
    "load_adapter",
    "method_names",
    "method_parameter_count",
    "methods",
    "print_trainable_parameters",
    "save_adapter",
    "toy",
]
