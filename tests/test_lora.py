"""adapterlib's LoRA against peft's, and merging."""

import pytest
import torch

from adapterlib import LoraConfig, TaskType, get_peft_model
from adapterlib.methods.lora import LoraLinear
from conftest import tiny_classifier

peft = pytest.importorskip("peft", reason="peft is the reference implementation; install requirements.txt")


def randomise_lora(peft_model) -> None:
    """B starts at zero; give it values so the update is not trivially zero."""
    torch.manual_seed(3)
    with torch.no_grad():
        for site in peft_model.sites(LoraLinear):
            site.active.B.normal_(0, 0.1)


@pytest.mark.parametrize(
    "targets", [("query", "value"), ("query", "key", "value", "intermediate.dense", "output.dense")]
)
def test_matches_peft_lora_with_the_same_A_and_B(targets, batch):
    ours = get_peft_model(
        tiny_classifier(),
        LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=targets, task_type=TaskType.SEQ_CLS),
    )
    randomise_lora(ours)
    reference = peft.get_peft_model(
        tiny_classifier(),
        peft.LoraConfig(
            r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(targets), task_type=peft.TaskType.SEQ_CLS
        ),
    ).eval()
    with torch.no_grad():
        ours_sites = {
            n.removeprefix("base_model."): m for n, m in ours.named_modules() if isinstance(m, LoraLinear)
        }
        their_sites = {
            n.removeprefix("base_model.model."): m
            for n, m in reference.named_modules()
            if hasattr(m, "lora_A")
        }
        assert ours_sites.keys() == their_sites.keys() and ours_sites
        for name, site in ours_sites.items():
            their_sites[name].lora_A["default"].weight.copy_(site.active.A)
            their_sites[name].lora_B["default"].weight.copy_(site.active.B)
        their_head = reference.base_model.model.classifier.modules_to_save["default"]
        their_head.load_state_dict(ours.base_model.classifier.active.state_dict())
    diff = (ours(**batch).logits - reference(**batch).logits).abs().max()
    assert diff <= 1e-5
    hidden = lambda m: m(**batch, output_hidden_states=True).hidden_states[-1]
    assert (hidden(ours) - hidden(reference)).abs().max() <= 1e-5


def test_trainable_counts_match_peft():
    ours = get_peft_model(tiny_classifier(), LoraConfig(r=4, task_type=TaskType.SEQ_CLS))
    reference = peft.get_peft_model(
        tiny_classifier(),
        peft.LoraConfig(r=4, target_modules=["query", "value"], task_type=peft.TaskType.SEQ_CLS),
    )
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert count(ours) == count(reference)


def test_merge_gives_the_same_outputs_and_unmerge_restores_the_weight(batch):
    peft_model = get_peft_model(tiny_classifier(), LoraConfig(r=4, dropout=0.0, task_type=TaskType.SEQ_CLS))
    randomise_lora(peft_model)
    query = peft_model.base_model.bert.encoder.layer[0].attention.self.query
    original = query.base_layer.weight.clone()
    unmerged = peft_model(**batch, output_hidden_states=True).hidden_states[-1]
    peft_model.merge_adapter()
    assert not torch.equal(query.base_layer.weight, original)
    torch.testing.assert_close(query.base_layer.weight, original + query.active.delta_weight())
    merged = peft_model(**batch, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    # merged: a plain Linear computes the output, the low-rank path is not used
    assert query(torch.ones(1, 32)).allclose(query.base_layer(torch.ones(1, 32)))
    with pytest.raises(RuntimeError, match="already merged"):
        query.merge()
    peft_model.unmerge_adapter()
    torch.testing.assert_close(query.base_layer.weight, original, rtol=0, atol=1e-6)
    torch.testing.assert_close(peft_model(**batch, output_hidden_states=True).hidden_states[-1], unmerged)
