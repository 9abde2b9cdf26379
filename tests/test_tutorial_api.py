"""The original tutorial's Hugging Face example, with adapterlib in place of peft, and the Trainer."""

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from adapterlib import AdapterConfig, TaskType, get_peft_model
from conftest import tiny_classifier


def test_tutorial_config_and_trainer_train_only_the_adapter(tmp_path):
    model = tiny_classifier()
    adapter_config = AdapterConfig(task_type=TaskType.SEQ_CLS, r=16, alpha=16, dropout=0.1)
    model = get_peft_model(model, adapter_config)
    assert "BottleneckSite" in repr(model) and "BottleneckAdapter" in repr(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    torch.manual_seed(0)
    ids = torch.randint(1, 100, (32, 8))
    labels = (ids[:, 0] > 50).long()
    data = Dataset.from_dict(
        {
            "input_ids": ids.tolist(),
            "attention_mask": [[1] * 8] * 32,
            "labels": labels.tolist(),
            "sentence": ["x"] * 32,
        }
    )
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        learning_rate=1e-2,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
    )
    Trainer(model=model, args=args, train_dataset=data).train()

    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed == trainable
