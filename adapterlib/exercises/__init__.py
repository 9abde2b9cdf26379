"""Checkers for the notebooks' exercises, graded by what the learner's code does.

An exercise cell hands the learner's answer to :func:`check` with the exercise's id, nothing else::

    Bottleneck = check("1.bottleneck", Bottleneck)

The expected values and the reference implementations live here, in one module per notebook
(``nb01.py``, ``nb02.py``, ...), never in the notebook cell. :func:`check` then does one of three things:

* **unanswered** (the answer is ``...``, or the learner's code still raises ``NotImplementedError``):
  it says so and returns the package's reference, so the cells after the exercise keep working;
* **wrong**: it prints a message that names the behaviour that failed and by how much
  ("at initialisation your module changed its input by 0.37"), never the expected value, and
  returns the package's reference, so that a wrong answer never feeds the later cells;
* **right**: it prints what was verified and returns the learner's own answer, which the cells after it use.

Handing in the package's own classes or functions is refused: the point is to write them.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


class NotYet(AssertionError):
    """The answer was checked and does not behave as asked; the message says which behaviour failed."""


class Unanswered(Exception):
    """Raised by a grader when the learner's code is still the template (``NotImplementedError``)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: a grader and what the notebook continues with when it is skipped.

    ``grade(answer)`` returns a one-line summary of what it verified, or raises :class:`NotYet`
    (wrong) or :class:`Unanswered` (still the template). ``reference`` builds what later cells use
    when the exercise is skipped (None for a prediction or a number, which later cells do not use).
    ``accepts_package_objects`` is for exercises whose answer is built *with* the package (a trained
    model, say), where handing in a package object is the point rather than a shortcut.
    """

    exercise_id: str
    grade: Callable[[Any], str]
    reference: Callable[[], Any] | None = None
    accepts_package_objects: bool = False


EXERCISES: dict[str, Exercise] = {}


def exercise(
    exercise_id: str, reference: Callable[[], Any] | None = None, accepts_package_objects: bool = False
):
    """Register the decorated grader under ``exercise_id``."""

    def register(grade: Callable[[Any], str]) -> Callable[[Any], str]:
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise id {exercise_id!r} is registered twice")
        EXERCISES[exercise_id] = Exercise(exercise_id, grade, reference, accepts_package_objects)
        return grade

    return register


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("nb"):
            importlib.import_module(f"{__name__}.{module.name}")


def is_package_code(answer: Any) -> bool:
    """True for adapterlib's (or peft's) own classes and functions, their subclasses and instances."""
    candidates = [answer] if inspect.isclass(answer) or callable(answer) else []
    if not inspect.isclass(answer) and not inspect.isfunction(answer):
        candidates.append(type(answer))
    for candidate in candidates:
        classes = inspect.getmro(candidate) if inspect.isclass(candidate) else (candidate,)
        for cls in classes:
            module = getattr(cls, "__module__", "") or ""
            if (module.startswith("adapterlib") and not module.startswith(__name__)) or module.split(".")[
                0
            ] == "peft":
                return True
    return False


def grade(exercise_id: str, answer: Any) -> str:
    """Grade without printing: the summary if right; raises NotYet if wrong, Unanswered if not done."""
    if exercise_id not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are: {known}")
    if answer is Ellipsis:
        raise Unanswered
    if not EXERCISES[exercise_id].accepts_package_objects and is_package_code(answer):
        raise NotYet(
            "that is the package's own implementation (or built on it); write your own code for this exercise."
        )
    try:
        return EXERCISES[exercise_id].grade(answer)
    except NotImplementedError as error:
        raise Unanswered from error


_require_correct = False


def require_correct_answers(required: bool = True) -> None:
    """Make :func:`check` raise :class:`NotYet` on a wrong or missing answer (for solutions notebooks and tests)."""
    global _require_correct
    _require_correct = required


def _fallback(exercise_entry: Exercise | None, answer: Any) -> Any:
    if exercise_entry is not None and exercise_entry.reference is not None:
        print("The cells below use the package's version until yours passes: fix it and run this cell again.")
        return exercise_entry.reference()
    return answer


def check(exercise_id: str, answer: Any) -> Any:
    """Grade the learner's answer and return what the cells after the exercise should use.

    Right: prints what was verified and returns the answer. Unanswered or wrong: prints why and
    returns the package's reference, so that a half-finished answer never feeds the later cells
    (after :func:`require_correct_answers`, a wrong or missing answer raises :class:`NotYet` instead).
    """
    exercise_entry = EXERCISES.get(exercise_id)
    try:
        summary = grade(exercise_id, answer)
    except Unanswered:
        if _require_correct:
            raise NotYet(f"[{exercise_id}] not answered") from None
        print(
            f"[{exercise_id}] Not answered yet: write your answer in place of the ... or the NotImplementedError, "
            "and run the cell again."
        )
        return _fallback(exercise_entry, answer)
    except NotYet as failure:
        if _require_correct:
            raise NotYet(f"[{exercise_id}] Not yet: {failure}") from None
        print(f"[{exercise_id}] Not yet: {failure}")
        return _fallback(exercise_entry, answer)
    print(f"[{exercise_id}] Correct: {summary}")
    return answer


def package_call(name: str) -> NotYet:
    return NotYet(f"your answer calls the package's {name}; write it with torch.")


@contextmanager
def package_calls_refused(functions: dict[str, Callable]) -> Iterator[list[str]]:
    """While the block runs, a call into any of ``functions`` (``{name: function}``) raises
    :class:`NotYet` naming it, however the learner's code reached it (imported, or the reference an
    unanswered ``check`` returned). The list it yields names the calls made, so that an answer which
    catches the error is refused all the same."""
    names = {function.__code__: name for name, function in functions.items()}
    called: list[str] = []

    def watch(frame, event: str, _) -> None:
        if event == "call" and frame.f_code in names:
            called.append(names[frame.f_code])
            raise package_call(called[0])

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        yield called
    finally:
        sys.setprofile(previous)


def compare_prediction(guess: Any, measured: float, tolerance: float, unit: str = "") -> bool:
    """The second half of "predict, then run": set the learner's guess beside the measurement.

    Returns True when the guess is within ``tolerance`` of what was measured. A guess of ``...``
    only prints the measurement, with a reminder that guessing first is the point; a guess that is
    not a number is sent back without the measurement.
    """
    if guess is Ellipsis:
        print(
            f"Measured: {measured:g}{unit}. (Next time write your guess first: that is where the learning is.)"
        )
        return False
    try:
        guess = float(guess)
    except (TypeError, ValueError):
        in_unit = f" (in {unit.strip()})" if unit.strip() else ""
        print(
            f"Your guess should be a plain number{in_unit}, not {guess!r}: write it in the cell above and "
            "run both again."
        )
        return False
    error = abs(guess - float(measured))
    verdict = "within" if error <= tolerance else "outside"
    print(
        f"You predicted {guess:g}{unit}; measured {measured:g}{unit}: off by {error:g}{unit}, "
        f"{verdict} the tolerance of {tolerance:g}{unit}."
    )
    return error <= tolerance


def close_enough(value: float, target: float, rel: float = 1e-6) -> bool:
    """Numbers equal up to a relative tolerance (for numeric answers)."""
    return abs(float(value) - float(target)) <= rel * max(1.0, abs(float(target)))


_load_all()
