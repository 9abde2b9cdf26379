"""Notebook 7's grader: the smallest LoRA rank whose count reaches an adapter's."""

import math

import pytest

from adapterlib.counting import bert_layer_linears
from adapterlib.exercises import NotYet, Unanswered, check, grade
from adapterlib.exercises.nb07 import RANK_CASES, SHAPES, matching_rank


def lora_per_rank(shape, targets) -> int:
    return sum(
        m + k
        for name, (m, k) in bert_layer_linears(shape).items()
        if any(name == t or name.endswith("." + t) for t in targets)
    )


def adapter_count(shape, r, placement, bias=True, houlsby_sites=2) -> int:
    d = shape.hidden_size
    sites = houlsby_sites if placement == "houlsby" else 1
    return sites * (2 * d * r + (d + r if bias else 0))


def right(shape, adapter_r, placement, targets):
    return math.ceil(adapter_count(shape, adapter_r, placement) / lora_per_rank(shape, targets))


def largest_below(shape, adapter_r, placement, targets):
    return adapter_count(shape, adapter_r, placement) // lora_per_rank(shape, targets)


def floor_plus_one(shape, adapter_r, placement, targets):
    return adapter_count(shape, adapter_r, placement) // lora_per_rank(shape, targets) + 1


def ignores_biases(shape, adapter_r, placement, targets):
    return math.ceil(adapter_count(shape, adapter_r, placement, bias=False) / lora_per_rank(shape, targets))


def square_ffn(shape, adapter_r, placement, targets):
    d = shape.hidden_size
    per_rank = sum(
        2 * d
        for name in bert_layer_linears(shape)
        if any(name == t or name.endswith("." + t) for t in targets)
    )
    return math.ceil(adapter_count(shape, adapter_r, placement) / per_rank)


def one_site_for_houlsby(shape, adapter_r, placement, targets):
    return math.ceil(
        adapter_count(shape, adapter_r, placement, houlsby_sites=1) / lora_per_rank(shape, targets)
    )


def one_matrix_per_name(shape, adapter_r, placement, targets):
    """Takes "output.dense" for the FFN's output only, missing that it also matches attention.output.dense."""
    sizes = {
        name.split(".")[-1] if name.startswith("attention.self") else name: size
        for name, size in bert_layer_linears(shape).items()
    }
    per_rank = sum(sum(sizes[t]) for t in targets)
    return math.ceil(adapter_count(shape, adapter_r, placement) / per_rank)


def test_right_answer_passes():
    assert "smallest" in grade("7.matching_rank", right)


def test_reference_is_the_closed_form():
    for shape_name, adapter_r, placement, targets in RANK_CASES:
        assert matching_rank(SHAPES[shape_name], adapter_r, placement, targets) == right(
            SHAPES[shape_name], adapter_r, placement, targets
        )


@pytest.mark.parametrize(
    "mistake, words",
    [
        (largest_below, "fewer than the adapter's"),
        (floor_plus_one, "already trains"),
        (ignores_biases, "fewer than the adapter's"),
        (square_ffn, "the adapter's"),
        (one_site_for_houlsby, "fewer than the adapter's"),
        (one_matrix_per_name, "also wraps `attention.output.dense`"),
    ],
)
def test_mistakes_are_caught(mistake, words):
    with pytest.raises(NotYet, match=words):
        grade("7.matching_rank", mistake)


def test_a_rank_must_be_a_positive_whole_number():
    with pytest.raises(NotYet, match="positive whole number"):
        grade("7.matching_rank", lambda *args: right(*args) + 0.5)


def test_unanswered_returns_the_reference():
    def template(shape, adapter_r, placement, targets):
        raise NotImplementedError("count both sides")

    assert check("7.matching_rank", template) is matching_rank
    with pytest.raises(Unanswered):
        grade("7.matching_rank", template)


def test_package_function_is_refused():
    from adapterlib.counting import method_parameter_count

    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("7.matching_rank", method_parameter_count)
