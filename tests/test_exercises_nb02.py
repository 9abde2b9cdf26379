"""Notebook 2's graders: the right answers pass, typical mistakes fail with the behaviour named."""

import pytest
import torch
from torch import nn

import adapterlib
from adapterlib import BottleneckAdapter
from adapterlib.exercises import NotYet, Unanswered, check, grade
from adapterlib.toy import TransformerLayer


def freeze_all_but(model: nn.Module, keep) -> int:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = keep(name)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freezes_only(model: nn.Module, keep) -> int:
    """Freezes what does not match, but never unfreezes what does."""
    for name, parameter in model.named_parameters():
        if not keep(name):
            parameter.requires_grad = False
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def counts_tensors(model: nn.Module, keep) -> int:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = keep(name)
    return sum(1 for p in model.parameters() if p.requires_grad)


def counts_frozen(model: nn.Module, keep) -> int:
    for name, parameter in model.named_parameters():
        parameter.requires_grad = keep(name)
    return sum(p.numel() for p in model.parameters() if not p.requires_grad)


def test_right_freeze_passes():
    assert "right on 5 rules" in grade("2.freeze", freeze_all_but)


@pytest.mark.parametrize(
    "wrong, behaviour",
    [
        (freezes_only, "is frozen afterwards"),
        (counts_tensors, "that is the number of trainable tensors"),
        (counts_frozen, "not the number of parameters it left trainable"),
    ],
)
def test_freeze_mistakes_are_named(wrong, behaviour):
    with pytest.raises(NotYet) as failure:
        grade("2.freeze", wrong)
    assert behaviour in str(failure.value)


def test_freeze_unanswered_falls_back_to_the_package():
    def template(model, keep):
        raise NotImplementedError("write freeze_all_but")

    with pytest.raises(Unanswered):
        grade("2.freeze", template)
    fallback = check("2.freeze", template)
    layer = TransformerLayer(d_model=8, num_heads=2)
    assert fallback(layer, lambda name: name.endswith("bias")) == sum(
        p.numel() for n, p in layer.named_parameters() if n.endswith("bias")
    )


def test_package_function_is_refused_for_freeze():
    with pytest.raises(NotYet, match="package's own implementation"):
        grade("2.freeze", adapterlib.count_parameters)


def add_adapter(layer: TransformerLayer, r: int) -> TransformerLayer:
    layer.requires_grad_(False)
    layer.output.LayerNorm = nn.Sequential(
        layer.output.LayerNorm, BottleneckAdapter(layer.config.hidden_size, r)
    )
    return layer


class Bottleneck(nn.Module):
    """A learner's adapter from notebook 1, with or without its residual."""

    def __init__(self, d: int, r: int, residual: bool = True) -> None:
        super().__init__()
        self.down, self.act, self.up = nn.Linear(d, r), nn.ReLU(), nn.Linear(r, d)
        self.residual = residual
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        update = self.up(self.act(self.down(h)))
        return h + update if self.residual else update


def with_own_bottleneck(layer, r):
    layer.requires_grad_(False)
    layer.output.LayerNorm = nn.Sequential(layer.output.LayerNorm, Bottleneck(layer.config.hidden_size, r))
    return layer


def base_left_trainable(layer, r):
    layer.output.LayerNorm = nn.Sequential(
        layer.output.LayerNorm, BottleneckAdapter(layer.config.hidden_size, r)
    )
    return layer


def frozen_after_inserting(layer, r):
    layer.output.LayerNorm = nn.Sequential(
        layer.output.LayerNorm, BottleneckAdapter(layer.config.hidden_size, r)
    )
    layer.requires_grad_(False)
    return layer


def no_residual(layer, r):
    layer.requires_grad_(False)
    adapter = Bottleneck(layer.config.hidden_size, r, residual=False)
    layer.output.LayerNorm = nn.Sequential(layer.output.LayerNorm, adapter)
    return layer


def replaces_the_layer_norm(layer, r):
    layer.requires_grad_(False)
    layer.output.LayerNorm = BottleneckAdapter(layer.config.hidden_size, r)
    return layer


def after_attention(layer, r):
    layer.requires_grad_(False)
    norm = layer.attention.output.LayerNorm
    layer.attention.output.LayerNorm = nn.Sequential(norm, BottleneckAdapter(layer.config.hidden_size, r))
    return layer


def houlsby(layer, r):
    layer.requires_grad_(False)
    for block in (layer.attention.output, layer.output):
        block.LayerNorm = nn.Sequential(block.LayerNorm, BottleneckAdapter(layer.config.hidden_size, r))
    return layer


def never_called(layer, r):
    layer.requires_grad_(False)
    layer.adapter = BottleneckAdapter(layer.config.hidden_size, r)
    return layer


def changes_base_weights(layer, r):
    with torch.no_grad():
        layer.output.dense.weight.mul_(1.01)
    return add_adapter(layer, r)


class NormThenAdapter(nn.Module):
    """Adds h to the adapter's output, although BottleneckAdapter already returns h + A(h)."""

    def __init__(self, norm: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.norm, self.adapter = norm, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        return h + self.adapter(h)


def doubled_residual(layer, r):
    layer.requires_grad_(False)
    layer.output.LayerNorm = NormThenAdapter(
        layer.output.LayerNorm, BottleneckAdapter(layer.config.hidden_size, r)
    )
    return layer


def forgets_to_return(layer, r):
    add_adapter(layer, r)


def test_right_insert_passes():
    assert "base frozen, output unchanged at initialisation" in grade("2.insert", add_adapter)


def test_own_bottleneck_from_notebook_1_passes():
    assert "adapter acts on the feed-forward block's output" in grade("2.insert", with_own_bottleneck)


@pytest.mark.parametrize(
    "wrong, behaviour",
    [
        (base_left_trainable, "the base layer is still trainable"),
        (frozen_after_inserting, "nothing in your layer trains"),
        (no_residual, "at initialisation your layer's output differs from the frozen layer's by"),
        (replaces_the_layer_norm, "at initialisation your layer's output differs from the frozen layer's by"),
        (doubled_residual, "the residual is doubled"),
        (after_attention, "the adapter belongs after `output.LayerNorm`"),
        (houlsby, "more than one bottleneck adapter"),
        (never_called, "the adapter is not on the forward path"),
        (changes_base_weights, "changed the base weight `output.dense.weight`"),
        (forgets_to_return, "your function returned NoneType"),
    ],
)
def test_insert_mistakes_are_named(wrong, behaviour):
    with pytest.raises(NotYet) as failure:
        grade("2.insert", wrong)
    assert behaviour in str(failure.value)


def test_package_get_peft_model_is_refused():
    with pytest.raises(NotYet, match="package's own implementation"):
        grade("2.insert", adapterlib.get_peft_model)


def test_insert_unanswered_falls_back_to_the_package(capsys):
    def template(layer, r):
        raise NotImplementedError("write add_adapter")

    fallback = check("2.insert", template)
    assert "Not answered yet" in capsys.readouterr().out
    with pytest.raises(NotYet, match="calls the package's"):  # wrapping the fallback is not an answer
        grade("2.insert", lambda layer, r: fallback(layer, r))
