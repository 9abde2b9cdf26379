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
    "shape, r, n, placement, targets",
    [
        ("toy TransformerLayer (d=128)", 1, 1, "houlsby", ("query",)),
        ("toy TransformerLayer (d=128)", 128, 200, "pfeiffer", ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")),
        ("MiniLM-L6 (packaged, d=384)", 16, 20, "pfeiffer", ("query", "value")),
        ("MiniLM-L6 (packaged, d=384)", 384, 1, "houlsby", ("intermediate.dense",)),
        ("BERT-large (d=1024)", 1024, 100, "houlsby", ("value",)),
    ],
)
def test_displayed_numbers_equal_built_models(shape, r, n, placement, targets):
    explorer = Explorer()
    explorer.shape.value = shape
    explorer.r.value = r
    explorer.prefix_length.value = n
    explorer.placement.value = placement
    explorer.targets.value = targets
    assert explorer.r.value == r  # within the slider's range for this shape
    shown = {name: (c.trainable, c.total) for name, c in explorer.counts().items()}
    assert shown == built_counts(explorer)
    for name, (trainable, _) in shown.items():
        assert f"<td>{name}</td><td style='text-align:right'>{trainable:,}</td>" in explorer.table.value


def test_r_slider_is_capped_at_the_hidden_size():
    explorer = Explorer()
    explorer.shape.value = "BERT-large (d=1024)"
    assert explorer.r.max == 1024
    explorer.shape.value = "toy TransformerLayer (d=128)"
    assert explorer.r.max == 128 and explorer.r.value <= 128


def test_prefix_on_bert_base_matches_the_documented_figure():
    explorer = Explorer()
    explorer.shape.value = "BERT-base (d=768)"
    explorer.prefix_length.value = 20
    assert explorer.counts()["prefix"].trainable == 370_178
