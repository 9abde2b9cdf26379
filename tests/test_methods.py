"""The three first methods on BERT and on the toy layer: where they insert, gradients, reference maths.
What every method promises (identity at start, counts, saving, merging, padding, checkpointing) is
tested once for all in test_registry_contract.py."""

import pytest
import torch

from adapterlib import AdapterConfig, LoraConfig, PrefixTuningConfig, TaskType, get_peft_model
from adapterlib.methods.adapter import BottleneckSite
from adapterlib.methods.prefix import PrefixSelfAttention
from adapterlib.toy import ToyTransformerLayer, TransformerLayer
from conftest import tiny_classifier, tiny_encoder

IMPLEMENTATIONS = ["eager", "sdpa"]


def test_tutorial_toy_layer_output_shape():
    layer = ToyTransformerLayer()
    out = layer(torch.randn(10, 32, 128))
    assert out.shape == torch.Size([10, 32, 128])
    assert [n for n, _ in layer.adapter.named_parameters()] == ["down.weight", "up.weight"]


@pytest.mark.parametrize(
    "position, module", [("after_layer_norm", "LayerNorm"), ("before_layer_norm", "dense")]
)
def test_bottleneck_placements_wrap_the_right_modules(position, module):
    houlsby = get_peft_model(tiny_encoder(), AdapterConfig(placement="houlsby", position=position))
    pfeiffer = get_peft_model(tiny_encoder(), AdapterConfig(placement="pfeiffer", position=position))
    wrapped = lambda m: sorted(n for n, s in m.base_model.named_modules() if isinstance(s, BottleneckSite))
    assert wrapped(houlsby) == [
        f"encoder.layer.{i}.{p}.{module}" for i in range(2) for p in ("attention.output", "output")
    ]
    assert wrapped(pfeiffer) == [f"encoder.layer.{i}.output.{module}" for i in range(2)]


def test_adapter_after_layer_norm_adds_its_update_to_the_normalised_output():
    torch.manual_seed(0)
    model = get_peft_model(tiny_encoder(), AdapterConfig(r=4))
    block = model.base_model.encoder.layer[0].output
    adapter = block.LayerNorm.adapters["default"]
    torch.nn.init.normal_(adapter.up.weight)
    hidden, residual = torch.randn(2, 5, block.dense.in_features), torch.randn(2, 5, block.dense.out_features)
    normalised = block.LayerNorm.base_layer(residual + block.dense(hidden))
    expected = normalised + adapter.scaling * adapter.up(adapter.act(adapter.down(normalised)))
    torch.testing.assert_close(block(hidden, residual), expected)


@pytest.mark.parametrize(
    "config",
    [
        AdapterConfig(task_type=TaskType.SEQ_CLS),
        LoraConfig(task_type=TaskType.SEQ_CLS),
        PrefixTuningConfig(num_virtual_tokens=4, task_type=TaskType.SEQ_CLS),
        PrefixTuningConfig(num_virtual_tokens=4, prefix_projection=True, task_type=TaskType.SEQ_CLS),
    ],
    ids=["adapter", "lora", "prefix", "prefix-mlp"],
)
def test_only_method_and_head_receive_gradients(config, batch):
    peft_model = get_peft_model(tiny_classifier(), config)
    peft_model.train()
    # A non-zero start for zero-initialised matrices, so every trainable tensor gets a gradient.
    with torch.no_grad():
        for _name, p in peft_model.named_parameters():
            if p.requires_grad and not p.any():
                p.normal_(0, 0.02)
    loss = peft_model(**batch, labels=torch.tensor([0, 1])).loss
    loss.backward()
    with_grad = {n for n, p in peft_model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert trainable, "the method must have trainable parameters"
    for name in trainable:
        assert "adapters.default" in name or "shared_adapters.default" in name, name
    assert any("classifier" in n for n in trainable)
    assert not any("pooler" in n for n in trainable)


def reference_prefix_attention(attention, hidden, prefix, padding):
    """Attention with [P_k; K], [P_v; V] computed from scratch, softmax written out."""
    base = attention.base_layer
    batch, seq, d = hidden.shape
    heads = base.num_attention_heads
    split = lambda x: x.reshape(x.shape[0], -1, heads, d // heads).transpose(1, 2)
    keys = torch.cat([prefix[0].expand(batch, -1, -1), base.key(hidden)], dim=1)
    values = torch.cat([prefix[1].expand(batch, -1, -1), base.value(hidden)], dim=1)
    q, k, v = split(base.query(hidden)), split(keys), split(values)
    visible = torch.cat([torch.ones(batch, prefix.shape[1], dtype=torch.bool), padding.bool()], dim=1)
    scores = (q @ k.transpose(-1, -2)) / (d // heads) ** 0.5
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    weights = scores.softmax(-1)
    return (weights @ v).transpose(1, 2).reshape(batch, seq, d), weights


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_prefix_attention_matches_reference_with_padding(implementation, batch):
    peft_model = get_peft_model(
        tiny_encoder(implementation), PrefixTuningConfig(num_virtual_tokens=3, init_std=1.0)
    )
    attention = peft_model.base_model.encoder.layer[0].attention.self
    assert isinstance(attention, PrefixSelfAttention) and attention.implementation == implementation
    captured = {}
    attention.register_forward_hook(lambda m, args, out: captured.update(hidden=args[0], out=out[0]))
    peft_model(**batch)
    prefix = peft_model.base_model.shared_adapters["default"]()[0]
    expected, weights = reference_prefix_attention(
        attention, captured["hidden"], prefix, batch["attention_mask"]
    )
    torch.testing.assert_close(captured["out"], expected, rtol=1e-5, atol=1e-5)
    # padded keys get no attention; the prefix does
    assert weights[1, :, :, 3 + 3 :].abs().max() == 0
    assert weights[1, :, :, :3].sum() > 0


def test_prefix_eager_and_sdpa_agree(batch):
    outputs = []
    for implementation in IMPLEMENTATIONS:
        torch.manual_seed(0)
        peft_model = get_peft_model(
            tiny_classifier(implementation), PrefixTuningConfig(num_virtual_tokens=5, init_std=1.0)
        )
        outputs.append(peft_model(**batch).logits)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_prefix_applies_to_the_original_model_object_and_disables(implementation, batch):
    model = tiny_encoder(implementation)
    expected = model(**batch).last_hidden_state
    peft_model = get_peft_model(model, PrefixTuningConfig(num_virtual_tokens=4, init_std=1.0))
    changed = peft_model(**batch).last_hidden_state
    assert (changed - expected).abs().max() > 1e-2, "a large random prefix must change the output"
    # The prefix is part of each attention layer: calling the original object computes the same.
    torch.testing.assert_close(model(**batch).last_hidden_state, changed, rtol=0, atol=0)
    with peft_model.disable_adapter():
        torch.testing.assert_close(model(**batch).last_hidden_state, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(peft_model(**batch).last_hidden_state, changed, rtol=0, atol=0)


def test_prefix_projection_shapes():
    peft_model = get_peft_model(
        tiny_encoder(),
        PrefixTuningConfig(num_virtual_tokens=7, prefix_projection=True, encoder_hidden_size=16),
    )
    assert peft_model.base_model.shared_adapters["default"]().shape == (2, 2, 7, 32)


@pytest.mark.parametrize(
    "config",
    [
        AdapterConfig(placement="houlsby"),
        LoraConfig(),
        PrefixTuningConfig(num_virtual_tokens=4, init_std=1.0),
    ],
    ids=["adapter", "lora", "prefix"],
)
def test_methods_apply_to_the_proper_toy_layer(config):
    torch.manual_seed(0)
    layer = TransformerLayer(d_model=32, num_heads=4).eval()
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    expected = layer(x, mask)
    peft_model = get_peft_model(layer, config)
    out = peft_model(x, mask)
    assert out.shape == (2, 5, 32)
    if config.method == "prefix":
        assert (out - expected).abs().max() > 1e-3
        with peft_model.disable_adapter():
            torch.testing.assert_close(peft_model(x, mask), expected)
    else:
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    peft_model.train()
    peft_model(x, mask).sum().backward()
    assert all(p.grad is None for n, p in peft_model.named_parameters() if not p.requires_grad)


def test_prefix_combines_with_lora_on_the_same_model(batch):
    peft_model = get_peft_model(tiny_encoder(), PrefixTuningConfig(num_virtual_tokens=2))
    peft_model.add_adapter("lora", LoraConfig(target_modules=("query",)))
    names = [n for n, _ in peft_model.named_parameters() if n.endswith("adapters.lora.A")]
    assert names == [
        f"base_model.encoder.layer.{i}.attention.self.base_layer.query.adapters.lora.A" for i in range(2)
    ]
