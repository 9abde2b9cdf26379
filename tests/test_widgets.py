"""The r explorer: numbers shown after moving controls equal counts of models built on the meta device."""

import pytest
import torch
from transformers import BertForSequenceClassification

from adapterlib import TaskType, count_parameters, get_peft_model
from adapterlib.toy import TransformerLayer
from adapterlib.widgets import Explorer


def built_counts(explorer: Explorer) -> dict[str, tuple[int, int]]:
    """Instantiate every method at the explorer's setting (no memory: meta device) and count."""
    shape = explorer.shapes[explorer.shape.value]
    result = {}
    for name, config in explorer.configs().items():
        name = explorer.methods[name].label
        with torch.device("meta"):
            if hasattr(shape, "vocab_size"):
                config.task_type = TaskType.SEQ_CLS
                model = BertForSequenceClassification(shape)
            else:
                model = TransformerLayer(shape.hidden_size, shape.num_attention_heads, shape.intermediate_size)
            trainable, total, _ = count_parameters(get_peft_model(model, config))
        result[name] = (trainable, total)
    return result


@pytest.mark.parametrize(
    "shape, adapter_r, lora_r, n, placement, targets",
    [
        ("toy TransformerLayer (d=128)", 1, 128, 1, "houlsby", ("query",)),
        ("toy TransformerLayer (d=128)", 128, 3, 200, "pfeiffer", ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")),
        ("MiniLM-L6 (packaged, d=384)", 16, 8, 20, "pfeiffer", ("query", "value")),
        ("MiniLM-L6 (packaged, d=384)", 384, 384, 1, "houlsby", ("intermediate.dense",)),
        ("BERT-large (d=1024)", 1024, 64, 100, "houlsby", ("value",)),
    ],
)
def test_displayed_numbers_equal_built_models(shape, adapter_r, lora_r, n, placement, targets):
    explorer = Explorer()
    explorer.shape.value = shape
    explorer.sizes["adapter"].value = adapter_r
    explorer.sizes["lora"].value = lora_r
    explorer.sizes["prefix"].value = n
    explorer.choices["adapter"]["placement"].value = placement
    explorer.choices["lora"]["target_modules"].value = targets
    assert (explorer.sizes["adapter"].value, explorer.sizes["lora"].value) == (adapter_r, lora_r)  # within range
    shown = {name: (c.trainable, c.total) for name, c in explorer.counts().items()}
    assert shown == built_counts(explorer)
    for name, (trainable, _) in shown.items():
        assert f"<td>{name}</td><td style='text-align:right'>{trainable:,}</td>" in explorer.table.value


def test_r_sliders_are_capped_at_the_hidden_size():
    explorer = Explorer()
    explorer.shape.value = "BERT-large (d=1024)"
    adapter_r, lora_r = explorer.sizes["adapter"], explorer.sizes["lora"]
    assert adapter_r.max == lora_r.max == 1024
    adapter_r.value = lora_r.value = 1024
    explorer.shape.value = "toy TransformerLayer (d=128)"
    assert adapter_r.max == lora_r.max == 128
    assert adapter_r.value <= 128 and lora_r.value <= 128
    assert explorer.sizes["prefix"].max == 200  # a prefix length is not capped by the width


def test_each_r_slider_moves_only_its_own_method():
    explorer = Explorer()
    before = explorer.counts()
    explorer.sizes["adapter"].value = 32
    after_adapter = explorer.counts()
    assert after_adapter["adapter"].trainable > before["adapter"].trainable
    assert after_adapter["LoRA"] == before["LoRA"] and after_adapter["prefix tuning"] == before["prefix tuning"]
    explorer.sizes["lora"].value = 4
    after_lora = explorer.counts()
    assert after_lora["LoRA"].trainable < after_adapter["LoRA"].trainable
    assert after_lora["adapter"] == after_adapter["adapter"]


def test_starting_ranks_are_the_package_defaults():
    from adapterlib import AdapterConfig, LoraConfig

    explorer = Explorer()
    assert (explorer.sizes["adapter"].value, explorer.sizes["lora"].value) == (AdapterConfig().r, LoraConfig().r)


def test_prefix_on_bert_base_matches_the_documented_figure():
    explorer = Explorer()
    explorer.shape.value = "BERT-base (d=768)"
    explorer.sizes["prefix"].value = 20
    assert explorer.counts()["prefix tuning"].trainable == 370_178


def test_every_registered_method_has_a_size_slider():
    from adapterlib import method_names

    assert list(Explorer().sizes) == list(method_names())
