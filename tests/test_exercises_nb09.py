"""Notebook 9's graders: right answers pass, typical mistakes are named, the package's code is refused."""

import math

import pytest
import torch

from adapterlib import unified
from adapterlib.exercises import NotYet, Unanswered, check, grade


def prefix_gate(query, key, prefix_key, attention_mask, *, scale=None, hide_padding=True, share="prefix",
                keepdim=True, stable=True, tokens_in_denominator=True):
    """A learner's lambda(x); the keywords switch on one typical mistake each."""
    divisor = scale or math.sqrt(query.shape[-1])
    prefix_scores = query @ prefix_key.transpose(-1, -2) / divisor
    token_scores = query @ key.transpose(-1, -2) / divisor
    if hide_padding:
        token_scores = token_scores.masked_fill(attention_mask[:, None, None, :] == 0, float("-inf"))
    if stable:
        weights = torch.cat([prefix_scores, token_scores], dim=-1).softmax(dim=-1)
        prefix_weight, token_weight = weights[..., :prefix_key.shape[1]], weights[..., prefix_key.shape[1]:]
    else:
        prefix_weight, token_weight = prefix_scores.exp(), token_scores.exp()
        total = prefix_weight.sum(-1, keepdim=True) + token_weight.sum(-1, keepdim=True)
        prefix_weight, token_weight = prefix_weight / total, token_weight / total
    if not tokens_in_denominator:
        prefix_weight = prefix_scores.softmax(dim=-1)
    chosen = prefix_weight if share == "prefix" else token_weight
    return chosen.sum(dim=-1, keepdim=keepdim)


def test_right_gate_passes():
    assert "prefix's share of attention" in grade("9.prefix_gate", prefix_gate)


@pytest.mark.parametrize(
    "mistake, message",
    [
        (dict(hide_padding=False), "keys of padded positions changed your λ"),
        (dict(share="tokens"), "share of attention that goes to the real tokens"),
        (dict(scale=1.0), r"divided by nothing \(no scaling\)"),
        (dict(keepdim=False), r"keep the summed axis \(keepdim=True\)"),
        (dict(stable=False), "exp overflowed"),
        (dict(tokens_in_denominator=False), "the denominator must hold the scores of the real tokens"),
    ],
    ids=["padding-counted", "tokens-share", "no-scaling", "no-keepdim", "overflow", "prefix-only-softmax"],
)
def test_gate_mistakes_are_named(mistake, message):
    wrong = lambda *args: prefix_gate(*args, **mistake)
    with pytest.raises(NotYet, match=message):
        grade("9.prefix_gate", wrong)


def test_gate_scaled_by_the_model_width_is_named():
    def by_width(query, *rest):
        return prefix_gate(query, *rest, scale=math.sqrt(query.shape[1] * query.shape[-1]))

    with pytest.raises(NotYet, match=r"sqrt\(heads \* d_h\)"):
        grade("9.prefix_gate", by_width)


def test_gate_messages_show_no_expected_values():
    with pytest.raises(NotYet) as failure:
        grade("9.prefix_gate", lambda q, k, p, m: prefix_gate(q, k, p, m) * 0.9)
    assert "differs from the prefix's share of attention by up to" in str(failure.value)
    assert "tensor(" not in str(failure.value)


def test_package_gate_is_refused():
    with pytest.raises(NotYet, match="package's own"):
        grade("9.prefix_gate", unified.prefix_gate)


def test_unanswered_gate_returns_the_reference(capsys):
    def template(query, key, prefix_key, attention_mask):
        raise NotImplementedError("write lambda(x)")

    with pytest.raises(Unanswered):
        grade("9.prefix_gate", template)
    assert check("9.prefix_gate", template) is unified.prefix_gate
    assert "Not answered yet" in capsys.readouterr().out


def dora_delta(x, weight, A, B, magnitude, scaling, *, norm_dim=1, subtract_base=True, norm_of="updated",
               use_scaling=True, use_magnitude=True):
    """A learner's DoRA Delta h; the keywords switch on one typical mistake each."""
    s = scaling if use_scaling else 1.0
    direction = weight + s * B @ A
    norms = torch.linalg.vector_norm(direction if norm_of == "updated" else weight, dim=norm_dim)
    gain = (magnitude if use_magnitude else torch.linalg.vector_norm(weight, dim=1)) / norms
    adapted = gain[:, None] * direction
    return x @ (adapted - weight).T if subtract_base else x @ adapted.T


def test_right_dora_passes():
    assert "zero at DoRA's start" in grade("9.dora_delta", dora_delta)


def test_dora_in_the_decomposed_form_passes():
    def decomposed(x, weight, A, B, magnitude, scaling):
        gain = magnitude / torch.linalg.vector_norm(weight + scaling * B @ A, dim=1)
        return (gain - 1) * (x @ weight.T) + gain * scaling * (x @ A.T @ B.T)

    assert "zero at DoRA's start" in grade("9.dora_delta", decomposed)


@pytest.mark.parametrize(
    "mistake, message",
    [
        (dict(norm_dim=0), r"each output feature \(a row of W\) has its own magnitude and its own norm"),
        (dict(subtract_base=False), "returns W x, the layer's output"),
        (dict(norm_of="frozen"), "the norm is taken of the updated weight"),
        (dict(use_scaling=False), "did not change when `scaling` doubled"),
        (dict(use_magnitude=False), "did not change when the magnitudes m doubled"),
    ],
    ids=["column-norms", "whole-output", "norm-of-W", "no-scaling", "no-magnitude"],
)
def test_dora_mistakes_are_named(mistake, message):
    wrong = lambda *args: dora_delta(*args, **mistake)
    with pytest.raises(NotYet, match=message):
        grade("9.dora_delta", wrong)


def test_dora_with_the_wrong_shape_is_named():
    with pytest.raises(NotYet, match="one change per token and output feature"):
        grade("9.dora_delta", lambda x, w, a, b, m, s: dora_delta(x, w, a, b, m, s).sum(-1))


def test_package_dora_is_refused():
    with pytest.raises(NotYet, match="package's own"):
        grade("9.dora_delta", unified.dora_delta)


def test_unanswered_dora_returns_the_reference(capsys):
    def template(x, weight, A, B, magnitude, scaling):
        raise NotImplementedError("write Delta h")

    assert check("9.dora_delta", template) is unified.dora_delta
    assert "Not answered yet" in capsys.readouterr().out


@pytest.mark.parametrize(
    "answer, message",
    [
        ({"bitfit", "ia3"}, r"\(IA\)³ multiplies each token's own hidden state"),
        ({"bitfit", "prefix"}, "gate λ\\(x\\)"),
        (set(), "leaves out a method"),
        ({"lora"}, "LoRA's B A x reads each token's input"),
        ({"bias"}, "'bias' is not one of the methods"),
        (3, "expected a set of method names"),
    ],
)
def test_same_for_every_token_mistakes_are_named(answer, message):
    with pytest.raises(NotYet, match=message):
        grade("9.same_for_every_token", answer)


def test_same_for_every_token_right_and_unanswered():
    assert "BitFit" in grade("9.same_for_every_token", {"bitfit"})
    assert "BitFit" in grade("9.same_for_every_token", ["BitFit"])
    assert check("9.same_for_every_token", ...) is Ellipsis
