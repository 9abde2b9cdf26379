"""Notebook 6's graders: the sampling interval, McNemar's paired test and the merge question."""

import math

import numpy as np
import pytest

from adapterlib.compare import summarize
from adapterlib.exercises import NotYet, Unanswered, check, grade
from adapterlib.exercises.nb06 import SIGNIFICANCE_CASES, differs, paired_outcomes, sampling_interval

# 6.sampling_interval ------------------------------------------------------------------------------


def right_interval(p: float, n: int) -> float:
    return 1.96 * math.sqrt(p * (1 - p) / n)


def standard_error_only(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def root_outside(p: float, n: int) -> float:
    return 1.96 * math.sqrt(p * (1 - p)) / n


def in_percent(p: float, n: int) -> float:
    return 196 * math.sqrt(p * (1 - p) / n)


def test_sampling_interval_right_answer_passes():
    assert "1.96 sqrt(p(1-p)/n)" in grade("6.sampling_interval", right_interval)


def test_sampling_interval_agrees_with_the_comparison_table():
    record = {
        "method": "adapter",
        "recipe": {"method_options": {"r": 16}, "learning_rate": 3e-3},
        "accuracy": 0.83,
        "evaluation_examples": 872,
        "trainable_parameters": 1,
        "trainable_fraction": 0.1,
        "seconds_per_step": 1.0,
        "train_seconds": 1.0,
    }
    (row,) = summarize([record])
    assert row["ci95_sampling"] == pytest.approx(100 * sampling_interval(0.83, 872))


@pytest.mark.parametrize(
    "mistake, words",
    [
        (standard_error_only, "1 standard error sqrt"),
        (root_outside, "1/sqrt(n)"),
        (in_percent, "not in percent"),
    ],
)
def test_sampling_interval_mistakes_are_named(mistake, words):
    with pytest.raises(NotYet, match=words.replace("(", r"\(").replace(")", r"\)")):
        grade("6.sampling_interval", mistake)


def test_sampling_interval_names_one_standard_error_in_the_singular():
    with pytest.raises(NotYet) as failure:
        grade("6.sampling_interval", standard_error_only)
    assert "which is 1 standard error sqrt" in str(failure.value)
    with pytest.raises(NotYet, match="is 0.51 standard errors"):
        grade("6.sampling_interval", lambda p, n: standard_error_only(p, n) / 1.96)


def test_sampling_interval_unanswered_returns_the_reference():
    def template(accuracy: float, n: int) -> float:
        raise NotImplementedError("write the half-width")

    assert check("6.sampling_interval", template) is sampling_interval
    with pytest.raises(Unanswered):
        grade("6.sampling_interval", template)


# 6.significant -------------------------------------------------------------------------------------


def exact_mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> bool:
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    p = min(1.0, 2 * sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c))
    return p < 0.05


def chi_square_mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> bool:
    """The large-sample version with continuity correction: (|b - c| - 1)^2 / (b + c) > 3.84."""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    return b + c > 0 and (abs(b - c) - 1) ** 2 / (b + c) > 3.841


def unpaired_z_test(correct_a: np.ndarray, correct_b: np.ndarray) -> bool:
    """Two independent proportions: ignores that both methods saw the same sentences."""
    n = len(correct_a)
    p_a, p_b = correct_a.mean(), correct_b.mean()
    standard_error = math.sqrt((p_a * (1 - p_a) + p_b * (1 - p_b)) / n)
    return standard_error > 0 and abs(p_a - p_b) / standard_error > 1.96


def fixed_threshold(correct_a: np.ndarray, correct_b: np.ndarray) -> bool:
    """A gap beyond the 2.5-point sampling interval counts as real."""
    return bool(abs(correct_a.mean() - correct_b.mean()) > 0.025)


def counts_ties(correct_a: np.ndarray, correct_b: np.ndarray) -> bool:
    """b and c taken as all of A's and all of B's right answers, agreements included."""
    b, c = int(correct_a.sum()), int(correct_b.sum())
    p = min(1.0, 2 * sum(math.comb(b + c, k) for k in range(min(b, c) + 1)) / 2 ** (b + c))
    return p < 0.05


def divides_by_disagreements(correct_a: np.ndarray, correct_b: np.ndarray) -> bool:
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    return (b - c) ** 2 / (b + c) > 3.841


@pytest.mark.parametrize("right", [exact_mcnemar, chi_square_mcnemar])
def test_significant_right_answers_pass(right):
    summary = grade("6.significant", right)
    assert "McNemar" in summary and "lopsided splits" in summary and "one-sided" not in summary


def test_reference_is_mcnemar_on_every_case():
    for b, c, both_right in SIGNIFICANCE_CASES:
        correct_a, correct_b = paired_outcomes(b, c, both_right)
        assert (
            differs(correct_a, correct_b)
            == exact_mcnemar(correct_a, correct_b)
            == chi_square_mcnemar(correct_a, correct_b)
        )
    assert {differs(*paired_outcomes(b, c, t)) for b, c, t in SIGNIFICANCE_CASES} == {True, False}


@pytest.mark.parametrize("mistake", [unpaired_z_test, fixed_threshold, counts_ties])
def test_significant_mistakes_are_caught(mistake):
    with pytest.raises(NotYet, match="both are right or both wrong carry no information"):
        grade("6.significant", mistake)


def test_unpaired_test_is_caught_on_a_case_where_pairing_matters():
    correct_a, correct_b = paired_outcomes(20, 2, 690)  # a 2.1-point gap, 20 disagreements to 2
    assert differs(correct_a, correct_b) and not unpaired_z_test(correct_a, correct_b)
    correct_a, correct_b = paired_outcomes(250, 210, 360)  # a 4.6-point gap among 460 disagreements
    assert not differs(correct_a, correct_b) and unpaired_z_test(correct_a, correct_b)


def test_division_by_zero_on_identical_predictions_is_named():
    with pytest.raises(NotYet, match="ZeroDivisionError"):
        grade("6.significant", divides_by_disagreements)


def test_significant_needs_a_boolean():
    with pytest.raises(NotYet, match="return True or False"):
        grade("6.significant", lambda a, b: "yes")


def test_significant_unanswered_returns_the_reference():
    def template(correct_a, correct_b):
        raise NotImplementedError("count the disagreements and test them")

    assert check("6.significant", template) is differs


def test_package_functions_are_refused():
    from adapterlib.compare import summarize as package_function

    with pytest.raises(NotYet, match="package's (own|version)"):
        grade("6.significant", package_function)


# 6.merges ------------------------------------------------------------------------------------------


def test_merges():
    assert "single matrix" in grade("6.merges", "LoRA")
    with pytest.raises(NotYet, match="nonlinearity"):
        grade("6.merges", "adapter")
    with pytest.raises(NotYet, match="softmax"):
        grade("6.merges", "prefix")
    with pytest.raises(NotYet, match="one of"):
        grade("6.merges", "bitfit")
    with pytest.raises(Unanswered):
        grade("6.merges", ...)
