"""DoRA divides by the norm of each weight row: a row of zeros must not turn into NaN."""

import torch

from adapterlib import DoraConfig, TaskType, get_peft_model
from conftest import tiny_classifier


def dora_on_a_zero_row():
    base = tiny_classifier()
    with torch.no_grad():
        base.bert.encoder.layer[0].attention.self.query.weight[3].zero_()
    return get_peft_model(
        base, DoraConfig(r=4, target_modules=("query", "value"), task_type=TaskType.SEQ_CLS)
    )


def test_training_with_a_zero_row_stays_finite(batch):
    peft_model = dora_on_a_zero_row()
    peft_model.train()
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = peft_model(**batch, labels=torch.tensor([0, 1])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert all(torch.isfinite(p).all() for p in peft_model.parameters())


def test_merging_with_a_zero_row_writes_no_nan(batch):
    peft_model = dora_on_a_zero_row()  # untrained: B = 0, so the zero row's norm is exactly 0
    peft_model.eval()
    with torch.no_grad():
        unmerged = peft_model(**batch).logits
        peft_model.merge_adapter()
        weight = peft_model.base_model.bert.encoder.layer[0].attention.self.query.base_layer.weight
        assert torch.isfinite(weight).all()
        torch.testing.assert_close(peft_model(**batch).logits, unmerged)
