"""Notebook 9's graders: right answers pass, typical mistakes are named, the package's code is refused."""

import math
import sys

import pytest
import torch

from adapterlib import unified
from adapterlib.exercises import NotYet, Unanswered, check, grade
from adapterlib.exercises.nb09 import METHOD_NAMES, measurement_beside_answer


def prefix_gate(
    query,
    key,
    prefix_key,
    attention_mask,
    *,
    scale=None,
    hide_padding=True,
    share="prefix",
    keepdim=True,
    stable=True,
    tokens_in_denominator=True,
    multiply_by_mask=False,
):
    """A learner's lambda(x); the keywords switch on one typical mistake each."""
    divisor = scale or math.sqrt(query.shape[-1])
    prefix_scores = query @ prefix_key.transpose(-1, -2) / divisor
    token_scores = query @ key.transpose(-1, -2) / divisor
    if multiply_by_mask:
        token_scores = token_scores * attention_mask[:, None, None, :]
    elif hide_padding:
        token_scores = token_scores.masked_fill(attention_mask[:, None, None, :] == 0, float("-inf"))
    if stable:
        weights = torch.cat([prefix_scores, token_scores], dim=-1).softmax(dim=-1)
        prefix_weight, token_weight = weights[..., : prefix_key.shape[1]], weights[..., prefix_key.shape[1] :]
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
        (
            dict(multiply_by_mask=True),
            r"padding must not count at all\. Your padded keys score 0, as if the scores "
            r"were multiplied by the mask, and exp\(0\) = 1",
        ),
    ],
    ids=[
        "padding-counted",
        "tokens-share",
        "no-scaling",
        "no-keepdim",
        "overflow",
        "prefix-only-softmax",
        "scores-times-mask",
    ],
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


def test_padding_that_still_counts_a_little_is_named():
    def weak_mask(
        query, key, prefix_key, attention_mask
    ):  # padded scores set to -10: exp(-10) is small, not 0
        d_h, n = query.shape[-1], prefix_key.shape[1]
        token_scores = (query @ key.transpose(-1, -2) / math.sqrt(d_h)).masked_fill(
            attention_mask[:, None, None, :] == 0, -10.0
        )
        scores = torch.cat([query @ prefix_key.transpose(-1, -2) / math.sqrt(d_h), token_scores], dim=-1)
        return scores.softmax(dim=-1)[..., :n].sum(dim=-1, keepdim=True)

    with pytest.raises(NotYet, match="cutting the padded positions off sentence 1 changed your λ") as failure:
        grade("9.prefix_gate", weak_mask)
    assert "multiplied by the mask" not in str(failure.value)


def test_package_gate_is_refused():
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("9.prefix_gate", unified.prefix_gate)


def test_unanswered_gate_returns_the_reference(capsys):
    def template(query, key, prefix_key, attention_mask):
        raise NotImplementedError("write lambda(x)")

    with pytest.raises(Unanswered):
        grade("9.prefix_gate", template)
    assert check("9.prefix_gate", template) is unified.prefix_gate
    assert "Not answered yet" in capsys.readouterr().out


def dora_delta(
    x,
    weight,
    A,
    B,
    magnitude,
    scaling,
    *,
    norm_dim=1,
    subtract_base=True,
    norm_of="updated",
    use_scaling=True,
    use_magnitude=True,
    scale_columns=False,
):
    """A learner's DoRA Delta h; the keywords switch on one typical mistake each."""
    s = scaling if use_scaling else 1.0
    direction = weight + s * B @ A
    norms = torch.linalg.vector_norm(direction if norm_of == "updated" else weight, dim=norm_dim)
    gain = (magnitude if use_magnitude else torch.linalg.vector_norm(weight, dim=1)) / norms
    adapted = direction * gain if scale_columns else gain[:, None] * direction
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
        (dict(scale_columns=True), r"your W' scales the columns of W \+ s B A"),
    ],
    ids=["column-norms", "whole-output", "norm-of-W", "no-scaling", "no-magnitude", "columns-scaled"],
)
def test_dora_mistakes_are_named(mistake, message):
    wrong = lambda *args: dora_delta(*args, **mistake)
    with pytest.raises(NotYet, match=message):
        grade("9.dora_delta", wrong)


def test_dora_scaling_columns_by_the_magnitude_is_named():
    def rows_normalised_columns_scaled(x, weight, A, B, magnitude, scaling):
        direction = weight + scaling * B @ A
        unit_rows = direction / torch.linalg.vector_norm(direction, dim=1, keepdim=True)
        return x @ (unit_rows * magnitude - weight).T

    with pytest.raises(NotYet, match="your W' scales the columns"):
        grade("9.dora_delta", rows_normalised_columns_scaled)


def test_dora_with_the_wrong_shape_is_named():
    with pytest.raises(NotYet, match="one change per token and output feature"):
        grade("9.dora_delta", lambda x, w, a, b, m, s: dora_delta(x, w, a, b, m, s).sum(-1))


def test_package_dora_is_refused():
    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("9.dora_delta", unified.dora_delta)


def test_unanswered_dora_returns_the_reference(capsys):
    def template(x, weight, A, B, magnitude, scaling):
        raise NotImplementedError("write Delta h")

    assert check("9.dora_delta", template) is unified.dora_delta
    assert "Not answered yet" in capsys.readouterr().out


# --------------------------------------------------------------- both code exercises

RIGHT = {"9.prefix_gate": prefix_gate, "9.dora_delta": dora_delta}


@pytest.mark.parametrize("exercise, what", [("9.prefix_gate", "λ"), ("9.dora_delta", "Δh")])
def test_right_values_in_float64_are_told_so_and_asked_for_float32(exercise, what):
    with pytest.raises(
        NotYet, match=f"your {what} is right, but your function returns torch.float64: return float32"
    ):
        grade(exercise, lambda *args: RIGHT[exercise](*args).double())


def test_a_wrong_answer_in_float64_is_diagnosed_as_usual():
    with pytest.raises(NotYet, match=r"divided by nothing \(no scaling\)"):
        grade("9.prefix_gate", lambda *args: prefix_gate(*args, scale=1.0).double())


@pytest.mark.parametrize(
    "convert, message",
    [
        (lambda output: output > 0.5, "a tensor of torch.bool; return a float tensor"),
        (lambda output: output.tolist(), "returned a list; return a float tensor"),
        (
            lambda output: output.half(),
            "returned torch.float16, which rounds to about 1e-03; return a float tensor",
        ),
    ],
    ids=["bool", "list", "float16"],
)
@pytest.mark.parametrize("exercise", list(RIGHT))
def test_an_answer_that_is_not_a_float_tensor_is_named(exercise, convert, message):
    with pytest.raises(NotYet, match=message):
        grade(exercise, lambda *args: convert(RIGHT[exercise](*args)))


@pytest.mark.parametrize(
    "exercise, wrapped, name",
    [
        ("9.prefix_gate", lambda *args: unified.prefix_gate(*args), "prefix_gate"),
        ("9.prefix_gate", lambda q, k, p, m: unified.prefix_delta(q, k, k, p, p, m)[..., :1], "prefix_delta"),
        ("9.dora_delta", lambda *args: unified.dora_delta(*args), "dora_delta"),
    ],
    ids=["gate", "gate-through-prefix_delta", "dora"],
)
def test_answers_that_call_the_package_are_refused(exercise, wrapped, name):
    profile = sys.getprofile()
    with pytest.raises(NotYet, match=f"your answer calls the package's adapterlib.unified.{name}"):
        grade(exercise, wrapped)
    assert sys.getprofile() is profile  # the refusal ends with the learner's call
    query, key, prefix_key, mask = (
        torch.randn(1, 2, 3, 4),
        torch.randn(1, 2, 3, 4),
        torch.randn(2, 1, 4),
        torch.ones(1, 3),
    )
    assert unified.prefix_gate(query, key, prefix_key, mask).shape == (1, 2, 3, 1)


def test_wrapping_the_reference_an_unanswered_check_returned_is_refused(capsys):
    def template(x, weight, A, B, magnitude, scaling):
        raise NotImplementedError("write Delta h")

    reference = check("9.dora_delta", template)
    assert reference is unified.dora_delta
    with pytest.raises(NotYet, match="calls the package's adapterlib.unified.dora_delta"):
        grade("9.dora_delta", lambda *args: reference(*args))
    capsys.readouterr()
    assert check("9.dora_delta", lambda *args: reference(*args)) is unified.dora_delta
    assert "Not yet: your answer calls the package's" in capsys.readouterr().out


# --------------------------------------------------------------- 9.same_for_every_token

WHERE_THE_ANSWER_WOULD_SHOW = [
    *METHOD_NAMES,
    "BitFit",
    "Δb",
    "bias",
    "reads nothing",
    "LoRA",
    "DoRA",
    "(IA)³",
    "prefix tuning",
]


@pytest.mark.parametrize(
    "answer, message",
    [
        ({"bitfit", "ia3"}, "1 of the 2 methods you chose gives each token its own Δh"),
        (set(METHOD_NAMES), "6 of the 7 methods you chose give each token its own Δh"),
        (set(), "your answer leaves out 1 method whose Δh is the same for every token"),
        ({"lora"}, "the one method you chose gives each token its own Δh; your answer leaves out 1 method"),
        (
            {"lora", "dora"},
            "2 of the 2 methods you chose give each token its own Δh; your answer leaves out 1",
        ),
    ],
)
def test_same_for_every_token_feedback_counts_without_naming(answer, message):
    with pytest.raises(NotYet, match=message) as failure:
        grade("9.same_for_every_token", answer)
    feedback = str(failure.value).lower()
    assert "what its δh reads" in feedback
    assert not [word for word in WHERE_THE_ANSWER_WOULD_SHOW if word.lower() in feedback]


@pytest.mark.parametrize(
    "answer, message",
    [({"bias"}, "'bias' is not one of the methods"), (3, "should be a string or a set of strings")],
)
def test_same_for_every_token_answers_that_are_not_names(answer, message):
    with pytest.raises(NotYet, match=message):
        grade("9.same_for_every_token", answer)


def test_same_for_every_token_right_and_unanswered():
    assert "BitFit" in grade("9.same_for_every_token", {"bitfit"})
    assert "BitFit" in grade("9.same_for_every_token", ["BitFit"])
    assert check("9.same_for_every_token", ...) is Ellipsis


SPREADS = {
    "lora": 1.9,
    "adapter (sequential)": 0.7,
    "parallel": 2.7,
    "ia3 keys": 0.2,
    "ia3 FFN activation": 0.1,
    "bitfit": 0.0,
    "prefix": 0.2,
    "dora": 0.5,
}


@pytest.mark.parametrize(
    "answer, says",
    [
        ({"bitfit"}, "Your answer agrees."),
        ({"bitfit", "ia3"}, "differ on: ia3"),
        (..., "run that cell first; the measurement shows after"),
        (3, "cannot be compared: expected a set"),
    ],
)
def test_the_measurement_is_set_beside_the_answer(answer, says, capsys):
    assert measurement_beside_answer(answer, SPREADS) == {"bitfit"}
    assert says in capsys.readouterr().out


@pytest.mark.parametrize(
    "changes",
    [{"bitfit": 0.1}, {"ia3 keys": 0.0, "ia3 FFN activation": 0.0}, {"dora": None}],
    ids=["none-the-same", "one-more-the-same", "a-method-unmeasured"],
)
def test_a_measurement_that_disagrees_with_the_grader_fails(changes):
    spreads = {row: value for row, value in {**SPREADS, **changes}.items() if value is not None}
    with pytest.raises(AssertionError, match="the measurement finds"):
        measurement_beside_answer({"bitfit"}, spreads)


def test_token_spread_and_the_share_with_equal_scores():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    changes = torch.ones(2, 4, 3)
    changes[1, 2:] = 5.0  # padded positions do not count
    assert unified.token_spread(changes, mask) == 0.0
    changes[0, 1, 2] = 1.25
    assert unified.token_spread(changes, mask) == 0.25
    query, key, prefix_key = torch.zeros(2, 3, 4, 8), torch.randn(2, 3, 4, 8), torch.randn(3, 5, 8)
    share = unified.equal_score_share(5, mask)
    assert share.flatten().tolist() == pytest.approx([5 / 9, 5 / 7])
    torch.testing.assert_close(unified.prefix_gate(query, key, prefix_key, mask), share.expand(2, 3, 4, 1))


def test_an_answer_that_catches_the_refusal_is_refused_all_the_same():
    def sly(*args):
        try:
            return unified.dora_delta(*args)
        except NotYet:
            return torch.zeros(1)  # swallows the refusal and answers something else

    with pytest.raises(NotYet, match="calls the package's adapterlib.unified.dora_delta"):
        grade("9.dora_delta", sly)
