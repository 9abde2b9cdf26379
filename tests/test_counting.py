"""Parameter counts: what instantiating gives equals the closed forms."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from adapterlib import (
    AdapterConfig,
    LoraConfig,
    PrefixTuningConfig,
    TaskType,
    bert_parameter_count,
    count_parameters,
    expected_trainable_parameters,
    get_peft_model,
    method_parameter_count,
)
from adapterlib.toy import TransformerLayer
from conftest import tiny_classifier, tiny_config

CONFIGS = [
    AdapterConfig(r=8, placement="houlsby", task_type=TaskType.SEQ_CLS),
    AdapterConfig(r=3, placement="pfeiffer", bias=False, task_type=TaskType.SEQ_CLS),
    LoraConfig(r=2, task_type=TaskType.SEQ_CLS),
    LoraConfig(
        r=4,
        target_modules=("query", "key", "value", "attention.output.dense", "intermediate.dense"),
        task_type=TaskType.SEQ_CLS,
    ),
    LoraConfig(r=4, target_modules=("output.dense",), task_type=TaskType.SEQ_CLS),
    PrefixTuningConfig(num_virtual_tokens=5, task_type=TaskType.SEQ_CLS),
    PrefixTuningConfig(
        num_virtual_tokens=5, prefix_projection=True, encoder_hidden_size=12, task_type=TaskType.SEQ_CLS
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.method)
def test_closed_forms_equal_instantiated_counts(config):
    model_config = tiny_config(num_labels=3)
    model = tiny_classifier(num_labels=3)
    assert count_parameters(model).total == bert_parameter_count(model_config, num_labels=3)
    trainable, total, fraction = count_parameters(get_peft_model(model, config))
    assert trainable == expected_trainable_parameters(model_config, config, num_labels=3)
    head_copy = 32 * 3 + 3
    assert (
        total
        == bert_parameter_count(model_config, num_labels=3)
        + method_parameter_count(model_config, config)
        + head_copy
    )
    assert fraction == trainable / total


def test_prefix_tuning_on_bert_base_matches_the_figure_peft_documents():
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(num_labels=2))
    assert count_parameters(model).total == bert_parameter_count(BertConfig(), num_labels=2) == 109_483_778
    peft_model = get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=20, task_type=TaskType.SEQ_CLS))
    assert (
        method_parameter_count(BertConfig(), PrefixTuningConfig(num_virtual_tokens=20))
        == 12 * 2 * 20 * 768
        == 368_640
    )
    assert count_parameters(peft_model).trainable == 370_178


def test_bert_base_adapter_and_lora_counts():
    config = BertConfig()
    assert method_parameter_count(config, AdapterConfig(r=16, placement="houlsby")) == 12 * 2 * (
        2 * 768 * 16 + 768 + 16
    )
    assert method_parameter_count(config, LoraConfig(r=8)) == 12 * 2 * 8 * (768 + 768) == 294_912


@pytest.mark.parametrize(
    "config",
    [
        AdapterConfig(r=4, placement="houlsby"),
        LoraConfig(r=4, target_modules=("dense",)),
        PrefixTuningConfig(num_virtual_tokens=6),
    ],
    ids=lambda c: c.method,
)
def test_toy_layer_counts(config):
    layer = TransformerLayer(d_model=64, num_heads=4)
    peft_model = get_peft_model(layer, config)
    assert count_parameters(peft_model).trainable == method_parameter_count(layer.config, config)


def test_print_trainable_parameters_uses_peft_format(capsys):
    peft_model = get_peft_model(tiny_classifier(), LoraConfig(r=2, task_type=TaskType.SEQ_CLS))
    peft_model.print_trainable_parameters()
    trainable, total, fraction = count_parameters(peft_model)
    assert (
        capsys.readouterr().out
        == f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * fraction:.4f}\n"
    )
