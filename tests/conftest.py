"""Tiny random BERT models: every test runs offline on a CPU in well under a second each."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel


def tiny_config(attn_implementation: str = "eager", **overrides) -> BertConfig:
    values = dict(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        attn_implementation=attn_implementation,
    )
    values.update(overrides)
    return BertConfig(**values)


def tiny_classifier(
    attn_implementation: str = "eager", seed: int = 0, **overrides
) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config(attn_implementation, **overrides)).eval()


def tiny_encoder(attn_implementation: str = "eager", seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(tiny_config(attn_implementation)).eval()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """Two sequences, the second padded after 3 tokens."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(1, 100, (2, 6), generator=generator)
    attention_mask = torch.ones(2, 6, dtype=torch.long)
    attention_mask[1, 3:] = 0
    input_ids[1, 3:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def snapshot(model: torch.nn.Module) -> tuple[str, dict[str, torch.Tensor], dict[str, bool]]:
    """Everything that 'unchanged' means: structure, values and which tensors train."""
    return (
        repr(model),
        {k: v.clone() for k, v in model.state_dict().items()},
        {k: p.requires_grad for k, p in model.named_parameters()},
    )


def assert_unchanged(model: torch.nn.Module, before) -> None:
    structure, values, trainable = snapshot(model)
    assert structure == before[0]
    assert values.keys() == before[1].keys()
    assert all(torch.equal(values[k], before[1][k]) for k in values)
    assert trainable == before[2]


def perturbed(model: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """Stand-in for training: move every trainable tensor by random noise, so that zero-initialised
    tensors (LoRA's B, an adapter's W_up) act and a lost or mixed-up tensor shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return model
