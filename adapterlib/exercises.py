"""Checkers for the notebooks' "check yourself" exercises.

An exercise cell starts with ``answer = ...``; :func:`check` tells the learner what to do
while the answer is still ``...``, and otherwise asserts it with a hint on what went wrong.
"""

from __future__ import annotations

from typing import Any


def check(answer: Any, expected: Any, hint: str) -> None:
    """Assert ``answer == expected`` (numbers within 1e-6), or say how to start if unanswered."""
    if answer is Ellipsis:
        print("Not answered yet: replace the ... with your answer and run the cell again.")
        return
    if isinstance(expected, float) or isinstance(answer, float):
        correct = abs(float(answer) - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    else:
        correct = answer == expected
    assert correct, f"Not quite: {answer!r} is not right. Hint: {hint}"
    print(f"Correct: {answer!r}.")
