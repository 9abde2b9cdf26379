r"""Notebook 6 (the comparison): how large is the noise, and when is a gap between two methods real?

* ``6.sampling_interval``: a function ``sampling_interval(accuracy, n)`` returning the half-width of
  the 95% interval of an accuracy measured on ``n`` sentences, :math:`1.96\sqrt{p(1-p)/n}`.
* ``6.significant``: a function ``differs(correct_a, correct_b)`` saying whether two methods scored
  on the same sentences differ beyond chance, by McNemar's exact test at the 5% level: with
  :math:`b` sentences that only A gets right and :math:`c` that only B gets right,
  :math:`p = \min\bigl(1,\ 2\,P(X \le \min(b, c))\bigr)` for :math:`X \sim \mathrm{Binomial}(b + c, \tfrac12)`.
* ``6.merges``: which of the three methods folds into the base weights (``"lora"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import NotYet, exercise
from .contract import call

LEVEL = 0.05
N_SENTENCES = 872  # the SST-2 validation set


def sampling_interval(accuracy: float, n: int) -> float:
    r"""Half-width of the 95% normal interval of a proportion: :math:`1.96\sqrt{p(1-p)/n}`."""
    return 1.96 * math.sqrt(accuracy * (1 - accuracy) / n)


def half_width(answer: Callable[[float, int], float], p: float, n: int) -> float:
    """The learner's half-width for accuracy ``p`` on ``n`` sentences, as a float; NotYet if it is not a number."""
    value = call(answer, p, n, what=f"for accuracy {p} on {n} sentences")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NotYet(
            f"for accuracy {p} on {n} sentences your function returned {type(value).__name__} {value!r}; "
            "return a plain number (float(...))."
        )
    if not math.isfinite(value):
        raise NotYet(
            f"for accuracy {p} on {n} sentences your half-width is {value}; it is a finite fraction."
        )
    return float(value)


@exercise("6.sampling_interval", kind="function", reference=lambda: sampling_interval)
def grade_sampling_interval(answer: Callable[[float, int], float]) -> str:
    """Agrees with the formula on several accuracies and set sizes (to 0.1%)."""
    cases = [(0.832, 872), (0.786, 872), (0.5, 872), (0.9, 1000), (0.832, 3488), (0.6, 100)]
    small, large = half_width(answer, 0.832, 872), half_width(answer, 0.832, 4 * 872)
    if small > 1:
        raise NotYet(
            f"for accuracy 0.832 on 872 sentences your half-width is {small:.3g}, more than 1: work with "
            "accuracy as a fraction (0.832), not in percent, and return a fraction too."
        )
    if large == 0 or not math.isclose(small, 2 * large, rel_tol=1e-3):
        if large == 0:
            raise NotYet(
                "with 3488 sentences your half-width is 0; a finite sample always leaves some noise."
            )
        raise NotYet(
            f"with 4 times as many sentences (872 -> 3488) your half-width shrank by a factor of "
            f"{small / large:.3g}; an interval of a mean shrinks like 1/sqrt(n)."
        )
    for p, n in cases:
        value = half_width(answer, p, n)
        if not math.isclose(value, sampling_interval(p, n), rel_tol=1e-3):
            ratio = f"{value / math.sqrt(p * (1 - p) / n):.3g}"
            errors = "standard error" if ratio == "1" else "standard errors"
            raise NotYet(
                f"for accuracy {p} on {n} sentences your half-width is {value:.4g}, which is "
                f"{ratio} {errors} sqrt(p(1-p)/n); check the spread of a "
                "single sentence, p(1-p), and the multiplier of a two-sided 95% normal interval."
            )
    return f"your half-width agrees with 1.96 sqrt(p(1-p)/n) on {len(cases)} accuracies and set sizes."


def disagreements(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """``(b, c)``: sentences only A gets right, and sentences only B gets right."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_exact_p(b: int, c: int) -> float:
    r"""Two-sided exact McNemar p-value: :math:`\min(1, 2 P(X \le \min(b, c)))`,
    with :math:`X \sim \mathrm{Bin}(b + c, 1/2)`."""
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def differs(correct_a: np.ndarray, correct_b: np.ndarray) -> bool:
    """True if A and B, scored on the same sentences, differ beyond chance (McNemar's exact test, 5%)."""
    return mcnemar_exact_p(*disagreements(correct_a, correct_b)) < LEVEL


def paired_outcomes(
    b: int, c: int, both_right: int, n: int = N_SENTENCES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sentence correctness of two methods: ``b`` sentences only A gets right, ``c`` only B, in shuffled order."""
    both_wrong = n - both_right - b - c
    if both_wrong < 0:
        raise ValueError(f"b + c + both_right = {b + c + both_right} exceeds n = {n}")
    a = np.array([True] * both_right + [True] * b + [False] * c + [False] * both_wrong)
    other = np.array([True] * both_right + [False] * b + [True] * c + [False] * both_wrong)
    order = np.random.default_rng(seed).permutation(n)
    return a[order], other[order]


# (b, c, both right) on 872 sentences: in every case the exact test and the chi-square approximation
# (with or without continuity correction) fall on the same side of 5%.
SIGNIFICANCE_CASES = [
    (0, 0, 700),  # identical predictions
    (30, 18, 680),  # a 1.4-point gap among few disagreements: chance
    (20, 2, 690),  # a 2.1-point gap, small but lopsided: real
    (2, 20, 690),  # the same with A and B swapped
    (250, 210, 360),  # a 4.6-point gap among 460 disagreements: chance
    (60, 20, 650),  # a 4.6-point gap among 80 disagreements: real
    (7, 0, 720),  # seven sentences, all one way: real
]


@exercise(
    "6.significant",
    kind="function",
    reference=lambda: differs,
    forbidden=(mcnemar_exact_p, disagreements),
)
def grade_significant(answer: Callable[[np.ndarray, np.ndarray], bool]) -> str:
    """Agrees with McNemar's exact test at 5% on pairs built from chosen disagreement counts."""
    for b, c, both_right in SIGNIFICANCE_CASES:
        correct_a, correct_b = paired_outcomes(b, c, both_right)
        expected = differs(correct_a, correct_b)  # before the learner's code runs, on the grader's own arrays
        gap = 100 * (b - c) / N_SENTENCES
        case = (
            f"two methods on {N_SENTENCES} sentences, A right and B wrong on {b}, the reverse on {c}, "
            f"both right on {both_right} (accuracy gap {gap:+.1f} points)"
        )
        try:
            result = call(answer, correct_a, correct_b, what=f"for {case}")
        except NotYet as error:
            if "ZeroDivisionError" not in str(error):
                raise

            raise NotYet(
                f"{error} When the two methods never disagree there is no evidence of a difference at all."
            ) from None
        if not isinstance(result, (bool, np.bool_)):
            raise NotYet(
                f"for {case} your function returned {type(result).__name__} {result!r}; return True or False."
            )
        if bool(result) != expected:
            verdict = "a real difference" if result else "chance"
            raise NotYet(
                f"for {case} your function called the gap {verdict}. Count b and c for this case, work out "
                "the two-sided p-value of min(b, c) under Binomial(b + c, 1/2), and compare it with 0.05; "
                "the sentences where both are right or both wrong carry no information about which is better."
            )
    return (
        f"your test agrees with McNemar's exact test at the 5% level on {len(SIGNIFICANCE_CASES)} pairs of "
        "methods, among them small gaps with lopsided splits and large gaps with near-even splits."
    )


@exercise("6.merges", kind="choice")
def grade_merges(answer: str) -> str:
    """The method whose update is a linear change of a weight matrix."""
    if not isinstance(answer, str) or answer.strip().lower() not in ("adapter", "lora", "prefix"):
        raise NotYet(f'answer with one of "adapter", "lora" or "prefix", not {answer!r}.')
    choice = answer.strip().lower()
    if choice == "adapter":
        raise NotYet(
            "an adapter's W_up sigma(W_down h) has a nonlinearity between its two matrices: no single matrix "
            "added to W computes it."
        )
    if choice == "prefix":
        raise NotYet(
            "prefix keys and values enter the softmax next to the sentence's own keys: they change which "
            "tokens are attended to, which no change of W_k or W_v reproduces for every input."
        )
    return (
        "W + (alpha/r) BA is a single matrix again: after merging, inference costs what the base model costs."
    )
