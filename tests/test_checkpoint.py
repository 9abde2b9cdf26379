"""Adapter-only checkpoints and several adapters on one frozen base."""

import json

import pytest
import torch
from safetensors.torch import load_file

from adapterlib import (
    AdapterConfig,
    LoraConfig,
    PrefixTuningConfig,
    TaskType,
    get_peft_model,
    load_adapter,
    save_adapter,
)
from conftest import tiny_classifier

CONFIGS = [
    AdapterConfig(placement="houlsby", task_type=TaskType.SEQ_CLS),
    LoraConfig(task_type=TaskType.SEQ_CLS),
    PrefixTuningConfig(num_virtual_tokens=4, prefix_projection=True, task_type=TaskType.SEQ_CLS),
]


def perturb(peft_model, seed: int) -> None:
    """Stand-in for training: move every trainable tensor."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.method)
def test_round_trip_gives_identical_logits(config, batch, tmp_path):
    trained = get_peft_model(tiny_classifier(seed=0), config)
    perturb(trained, seed=1)
    expected = trained(**batch).logits
    save_adapter(trained, tmp_path, base_model_name="tiny-bert")
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert sum(t.numel() for t in saved.values()) == sum(
        p.numel() for p in trained.parameters() if p.requires_grad
    )
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    assert meta["peft_config"]["method"] == config.method and meta["base_model_name"] == "tiny-bert"
    # a fresh base with the same pre-trained weights (seed 0) but a different random head
    fresh = tiny_classifier(seed=0)
    torch.manual_seed(99)
    fresh.classifier.reset_parameters()
    loaded = load_adapter(fresh, tmp_path)
    assert torch.equal(loaded(**batch).logits, expected)
    assert loaded.peft_config["default"] == config


def test_two_task_adapters_switch_by_name(batch, tmp_path):
    base = tiny_classifier()
    peft_model = get_peft_model(base, AdapterConfig(task_type=TaskType.SEQ_CLS), adapter_name="sentiment")
    perturb(peft_model, seed=1)
    sentiment = peft_model(**batch).logits
    frozen = [(p, p.detach().clone()) for p in base.parameters() if not p.requires_grad]
    peft_model.add_adapter("negation", LoraConfig(task_type=TaskType.SEQ_CLS))
    assert peft_model.active_adapter == "negation"
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".negation" in n for n in trainable)
    perturb(peft_model, seed=2)
    negation = peft_model(**batch).logits
    assert not torch.allclose(sentiment, negation)
    peft_model.set_adapter("sentiment")
    assert torch.equal(peft_model(**batch).logits, sentiment)
    peft_model.set_adapter("negation")
    assert torch.equal(peft_model(**batch).logits, negation)
    assert all(torch.equal(p, value) for p, value in frozen)
    with pytest.raises(ValueError, match="no adapter named 'topic'"):
        peft_model.set_adapter("topic")
    save_adapter(peft_model, tmp_path / "sentiment", adapter_name="sentiment")
    save_adapter(peft_model, tmp_path / "negation", adapter_name="negation")
    reloaded = load_adapter(tiny_classifier(), tmp_path / "sentiment", adapter_name="sentiment")
    load_adapter(reloaded, tmp_path / "negation", adapter_name="negation")
    assert torch.equal(reloaded(**batch).logits, negation)
    reloaded.set_adapter("sentiment")
    assert torch.equal(reloaded(**batch).logits, sentiment)


def test_switching_while_merged_is_refused():
    peft_model = get_peft_model(tiny_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS))
    peft_model.add_adapter("other", LoraConfig(task_type=TaskType.SEQ_CLS))
    peft_model.merge_adapter()
    with pytest.raises(RuntimeError, match="unmerge_adapter"):
        peft_model.set_adapter("default")
