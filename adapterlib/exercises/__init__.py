"""Checkers for the notebooks' exercises, graded by what the learner's code does.

An exercise cell hands the learner's answer to :func:`check` with the exercise's id, nothing else::

    Bottleneck = check("1.bottleneck", Bottleneck)

The expected values and the reference implementations live here, in one module per notebook
(``nb01.py``, ``nb02.py``, ...), never in the notebook cell. :func:`check` then does one of three things:

* unanswered (the answer is ``...``, or the learner's code still raises ``NotImplementedError``):
  it says so and returns the package's reference, so the cells after the exercise keep working;
* wrong: it shows a message that names the behaviour that failed and by how much
  ("at initialisation your module changed its input by 0.37"), never the expected value, and
  returns the package's reference, so that a wrong answer never feeds the later cells;
* right: it shows what was verified and returns the learner's own answer, which the cells after it use.

Every grade runs under one contract (:mod:`.contract`, threat model in GRADING.md): the learner's
exceptions, endless loops, wrong return types, changes to torch's global state or to the grader, and
calls into the package code the exercise is about all end as feedback, never as a pass or a traceback;
the package's version that ``check`` handed back is recognised when it comes back, and is never graded.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .. import unified
from . import contract
from .contract import (
    LIBRARIES,
    GlobalState,
    Pristine,
    TimeLimit,
    code_key,
    code_objects,
    describe_error,
    grader_read_only,
    learner_line,
    package_code_refused,
    raised_by_learner,
    time_limit,
)
from .feedback import Feedback

KINDS = ("class", "function", "pair", "number", "choice")


class NotYet(AssertionError):
    """The answer was checked and does not behave as asked; the message says which behaviour failed."""


class Unanswered(Exception):
    """Raised when the answer is still the template (``...`` or ``NotImplementedError``)."""


class FallbackAgain(NotYet):
    """The answer is the package's version that ``check`` returned after an earlier try."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its grader, the kind of answer it takes, and what the notebook falls back on.

    ``kind``: ``"class"``, ``"function"``, ``"pair"`` (a function and the object to try it on),
    ``"number"`` or ``"choice"`` (a string or a set of strings). ``grade(answer)`` returns a one-line
    summary of what it verified, or raises :class:`NotYet`. ``reference`` builds what later cells use
    when the answer is missing or wrong (None for a number or a choice). ``forbidden``: package
    functions, classes or modules the learner's code may not call while it is graded (the reference
    is always among them). ``uses_package`` marks an exercise whose answer is built with the package
    (a trained model), where handing in package objects is the point.
    """

    exercise_id: str
    grade: Callable[[Any], str]
    kind: str
    reference: Callable[[], Any] | None = None
    forbidden: tuple[Any, ...] = ()
    uses_package: bool = False

    def fallback(self) -> Any:
        return None if self.reference is None else self.reference()

    def fallback_parts(self) -> tuple[Any, ...]:
        """The callables in the fallback (a pair's function, say)."""
        fallback = self.fallback()
        parts = fallback if isinstance(fallback, tuple) else (fallback,)
        return tuple(part for part in parts if callable(part))

    def forbidden_code(self) -> dict:
        """The code the learner's answer may not call: the fallback, what the exercise names, and for every
        exercise the checker modules (their helpers compute the answers) and ``adapterlib.unified`` (each
        method's change to a hidden state, in closed form)."""
        return {**ALWAYS_FORBIDDEN, **code_objects((*self.fallback_parts(), *self.forbidden))}


EXERCISES: dict[str, Exercise] = {}


def exercise(
    exercise_id: str,
    *,
    kind: str,
    reference: Callable[[], Any] | None = None,
    forbidden: tuple[Any, ...] = (),
    uses_package: bool = False,
):
    """Register the decorated grader under ``exercise_id`` (see :class:`Exercise` for the fields)."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {KINDS}")

    def register(grade: Callable[[Any], str]) -> Callable[[Any], str]:
        if exercise_id in EXERCISES:
            raise ValueError(f"exercise id {exercise_id!r} is registered twice")
        EXERCISES[exercise_id] = Exercise(exercise_id, grade, kind, reference, tuple(forbidden), uses_package)
        return grade

    return register


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


def _runs_forbidden_code(answer: Any, entry: Exercise) -> bool:
    """True if the answer's own code is code the exercise forbids: a copy of the package's function
    (``__code__.replace()``, marshal) or a class whose methods are copies of the package's."""
    forbidden = entry.forbidden_code()
    parts = answer if isinstance(answer, tuple) else (answer,)
    for part in parts:
        functions = [part]
        if inspect.isclass(part):
            functions = [v for cls in part.__mro__ if cls is not object for v in vars(cls).values()]
        for function in functions:
            code = getattr(inspect.unwrap(function) if callable(function) else function, "__code__", None)
            if isinstance(code, types.CodeType) and code_key(code) in forbidden:
                return True
    return False


def is_fallback(answer: Any, parts: tuple[Any, ...]) -> bool:
    """True if ``answer`` is one of ``parts`` (what ``check`` hands back) or built from one: a partial of
    it, a subclass, an instance, a module holding an instance, a tuple holding any of these."""
    if isinstance(answer, tuple):
        return any(is_fallback(item, parts) for item in answer)
    if isinstance(answer, functools.partial):
        return is_fallback(answer.func, parts)
    for part in parts:
        if answer is part or getattr(answer, "__wrapped__", None) is part:
            return True
        if inspect.isclass(part):
            if inspect.isclass(answer) and issubclass(answer, part):
                return True
            if isinstance(answer, part):
                return True
            if isinstance(answer, nn.Module) and any(isinstance(m, part) for m in answer.modules()):
                return True
    return False


# ---------------------------------------------------------------- settings (changed only through these)

_settings: dict[str, Any] = {"require_correct": False, "time_limit": 30.0, "reference_factor": 20.0}
_reference_seconds: dict[str, float | None] = {}
_progress: dict[str, str] = {}


def require_correct_answers(required: bool = True) -> None:
    """Make :func:`check` raise :class:`NotYet` on a wrong or missing answer (solutions notebooks, nbgrader)."""
    _settings["require_correct"] = required


def set_time_limit(seconds: float = 30.0, reference_factor: float = 20.0) -> None:
    """An answer may run ``max(seconds, reference_factor x the reference's grading time)`` before it is stopped."""
    _settings["time_limit"], _settings["reference_factor"] = float(seconds), float(reference_factor)


# ---------------------------------------------------------------- grading under the contract

_FALLBACK_AGAIN = (
    "this is the package's version, which check handed back after your earlier try, not your own code. "
    "Write your own in the cell above, run that cell, then run this one again."
)
_PLAIN = {"number": (int, float), "choice": (str, set, frozenset, list, tuple)}


def _plain_value(entry: Exercise, answer: Any) -> Any:
    """A number or a choice as a plain Python value (a numpy scalar becomes one); NotYet for anything else,
    so that no code of the learner's (a lying __eq__, say) runs inside the grader."""
    if hasattr(answer, "item") and type(answer).__module__ == "numpy" and getattr(answer, "ndim", 1) == 0:
        answer = answer.item()
    kinds = _PLAIN[entry.kind]
    nested = isinstance(answer, (set, frozenset, list, tuple)) and not all(type(x) is str for x in answer)
    if type(answer) not in kinds or nested:
        wanted = (
            "a plain number (an int or a float)" if entry.kind == "number" else "a string or a set of strings"
        )
        raise NotYet(f"the answer should be {wanted}, not {type(answer).__name__} {answer!r}.")
    return answer


def _shape_of_answer(entry: Exercise, answer: Any) -> Any:
    """NotYet if the answer is not the kind of thing the exercise takes; the value to grade otherwise."""
    if entry.kind in _PLAIN:
        return _plain_value(entry, answer)
    if entry.kind == "class" and not inspect.isclass(answer):
        raise NotYet(f"hand in the class itself, not {type(answer).__name__} {answer!r}.")
    if entry.kind == "function" and (inspect.isclass(answer) or not callable(answer)):
        raise NotYet(f"hand in the function itself, not {type(answer).__name__} {answer!r}.")
    if entry.kind == "pair" and not (isinstance(answer, tuple) and len(answer) == 2 and callable(answer[0])):
        raise NotYet(
            "hand in your function together with the object to try it on, as a pair (function, object)."
        )
    return answer


def _run(entry: Exercise, answer: Any, seconds: float) -> str:
    """``entry.grade(answer)`` under the contract; the summary, or NotYet / Unanswered / TimeLimit."""
    before = GlobalState.save()
    outcome: BaseException | None = None
    summary = ""
    refused: list[str] = []
    attempts: list[str] = []
    try:
        with time_limit(seconds), grader_read_only() as attempts:
            with package_code_refused(entry.forbidden_code()) as refused:
                try:
                    summary = entry.grade(answer)
                except BaseException as error:  # judged below, after the state is back
                    outcome = error
    except TimeLimit as error:  # raised just as the grade ended, delivered in the guard's own code
        outcome = error
    finally:
        after = GlobalState.save()
        before.restore()
    tampered = [*attempts, *_PRISTINE.changes(), *LIBRARIES.changes()]
    _PRISTINE.put_back()
    LIBRARIES.put_back()
    if isinstance(outcome, KeyboardInterrupt):
        raise outcome
    if isinstance(outcome, TimeLimit):
        raise outcome  # stopped part-way: what it left behind says nothing about the answer
    if tampered:
        raise NotYet(
            f"your code changed the grader or a library function it uses ({', '.join(dict.fromkeys(tampered[:3]))}); "
            "it is put back: answers are graded by what they compute, so leave those alone."
        )
    if _caused_by(outcome, RecursionError):  # CPython drops the profile hook when the stack runs out
        refused = [name for name in refused if not name.startswith("sys.setprofile")]
        outcome = RecursionError()
    if refused:
        raise NotYet(
            f"your answer calls the package's {refused[0]}; write it with torch (or plain Python) yourself: "
            "that is the exercise."
        )
    changed = after.settings_changed_since(before)
    if changed:
        raise NotYet(
            f"your code changed {changed[0]} and left it so, which would change every cell after this one; "
            "keep such a change inside a with block (torch.no_grad(), ...) or set it back before returning."
        )
    if outcome is None:
        return summary
    if isinstance(outcome, NotYet):
        raise outcome
    template = isinstance(outcome, NotImplementedError) and raised_by_learner(outcome)
    if isinstance(outcome, Unanswered) or template:  # the template's own raise NotImplementedError
        raise Unanswered from outcome
    if isinstance(outcome, NotImplementedError) and '"forward"' in str(outcome):
        raise NotYet("your class has no method called forward (is it spelled `def forward(self, ...)`?).")
    if isinstance(outcome, SystemExit):
        raise NotYet("your code called sys.exit() (or raised SystemExit); return a value instead.")
    if isinstance(outcome, RecursionError):
        raise NotYet(
            "your code calls itself without end (RecursionError: maximum recursion depth exceeded); "
            "check that each call works on a smaller case and that one case returns without calling."
        )
    if learner_line(outcome) is not None:
        raise NotYet(f"your code raised {describe_error(outcome)}.")
    raise NotYet(
        f"the grader could not use what your code returned or built ({type(outcome).__name__}: {outcome}); "
        "check the type and shape of what it returns."
    )


def _caused_by(error: BaseException | None, kind: type[BaseException]) -> bool:
    """True if ``error`` is a ``kind``, or was raised while handling one (a grader's NotYet about it)."""
    while error is not None:
        if isinstance(error, kind):
            return True
        error = error.__cause__ or error.__context__
    return False


def grade_reference(exercise_id: str) -> str:
    """Grade the package's own version of an exercise, trusted (nothing refused): its summary, or NotYet.

    The graders' own consistency check, and the clock for the time limit."""
    entry = EXERCISES[exercise_id]
    if entry.reference is None:
        raise ValueError(f"exercise {exercise_id!r} has no reference to grade")
    state = GlobalState.save()
    _PRISTINE.put_back()
    LIBRARIES.put_back()
    try:
        with time_limit(_settings["time_limit"]):
            return entry.grade(entry.fallback())
    finally:
        state.restore()
        _PRISTINE.put_back()


def _measured_reference_seconds(entry: Exercise) -> float | None:
    """How long grading the package's own version takes (measured once)."""
    if entry.exercise_id not in _reference_seconds:
        seconds = None
        if entry.reference is not None:
            start = time.perf_counter()
            try:
                grade_reference(entry.exercise_id)
                seconds = time.perf_counter() - start
            except (Exception, TimeLimit):
                seconds = None
        _reference_seconds[entry.exercise_id] = seconds
    return _reference_seconds[entry.exercise_id]


def _graded_in_time(entry: Exercise, answer: Any) -> str:
    """Grade within ``time_limit``; past it, allow ``reference_factor`` x the reference's time if that is longer."""
    seconds = _settings["time_limit"]
    try:
        return _run(entry, answer, seconds)
    except TimeLimit:
        reference = _measured_reference_seconds(entry)
        longer = None if reference is None else reference * _settings["reference_factor"]
        if longer is not None and longer > seconds:
            seconds = longer
            try:
                return _run(entry, answer, seconds)
            except TimeLimit:
                pass
    raise NotYet(
        f"your code was still running after {seconds:g} s, far longer than the package's version needs; "
        "look for a loop that never ends (a while whose condition never changes, say)."
    ) from None


def grade(exercise_id: str, answer: Any) -> str:
    """Grade without showing anything: the summary if right; raises NotYet if wrong, Unanswered if not done."""
    if exercise_id not in EXERCISES:
        known = ", ".join(sorted(EXERCISES))
        raise KeyError(f"no exercise {exercise_id!r}; the exercises are: {known}")
    entry = EXERCISES[exercise_id]
    _PRISTINE.put_back()  # the grader as it was imported, whatever an earlier cell assigned
    LIBRARIES.put_back()
    if answer is Ellipsis:
        raise Unanswered
    if entry.reference is not None and is_fallback(answer, entry.fallback_parts()):
        parts = answer if isinstance(answer, tuple) else (answer,)
        if any(part is fallback for part in parts for fallback in entry.fallback_parts()):
            raise FallbackAgain(_FALLBACK_AGAIN)
        raise NotYet(
            "your answer is built on the package's version (a subclass, an instance or a partial of it); "
            "write your own in the cell above."
        )
    if (not entry.uses_package and is_package_code(answer)) or _runs_forbidden_code(answer, entry):
        raise NotYet(
            "that is the package's own implementation (or built on it); write your own code for this exercise."
        )
    answer = _shape_of_answer(entry, answer)
    return _graded_in_time(entry, answer)


_NEXT_STEP = {
    "unanswered": "Until you answer, the cells below use the package's version.",
    "wrong": "The cells below use the package's version until yours passes: fix it and run this cell again.",
    "again": "The cells below use the package's version until yours passes.",
}


def check(exercise_id: str, answer: Any) -> Any:
    """Grade the learner's answer, show the verdict, and return what the cells after the exercise should use.

    Right: shows what was verified and returns the answer. Unanswered or wrong: shows why and
    returns the package's reference, so that a half-finished answer never feeds the later cells
    (after :func:`require_correct_answers`, a wrong or missing answer raises :class:`NotYet` instead).
    """
    entry = EXERCISES.get(exercise_id)
    strict = _settings["require_correct"]
    try:
        summary = grade(exercise_id, answer)
    except Unanswered:
        _progress[exercise_id] = "unanswered"
        if strict:
            raise NotYet(f"[{exercise_id}] not answered") from None
        message = (
            "write your answer in place of the ... (or of the raise NotImplementedError), then run the cell."
        )
        step = _NEXT_STEP["unanswered"] if entry is not None and entry.reference is not None else ""
        Feedback("unanswered", exercise_id, message, step).show()
        return answer if entry is None or entry.reference is None else entry.fallback()
    except NotYet as failure:
        _progress[exercise_id] = "not yet"
        if strict:
            raise NotYet(f"[{exercise_id}] Not yet: {failure}") from None
        has_fallback = entry is not None and entry.reference is not None
        step = _NEXT_STEP["again" if isinstance(failure, FallbackAgain) else "wrong"] if has_fallback else ""
        Feedback("wrong", exercise_id, str(failure), step).show()
        return entry.fallback() if has_fallback else answer
    _progress[exercise_id] = "passed"
    Feedback("correct", exercise_id, summary).show()
    return answer


def progress(prefix: str = "", show: bool = True) -> dict[str, str]:
    """Which exercises passed in this kernel: ``{id: "passed" | "not yet" | "unanswered" | "not tried"}``.

    ``prefix`` narrows it to one notebook (``"4."``); the verdict is the latest ``check`` of each exercise.
    """
    ids = sorted((i for i in EXERCISES if i.startswith(prefix) and i[:1].isdigit()), key=_id_order)
    status = {i: _progress.get(i, "not tried") for i in ids}
    if show:
        passed = [i for i, s in status.items() if s == "passed"]
        others = ", ".join(f"{i} {s}" for i, s in status.items() if s != "passed")
        message = f"{len(passed)} of {len(status)} exercises passed in this kernel" + (
            f": {', '.join(passed)}." if passed else "."
        )
        Feedback(
            "correct" if len(passed) == len(status) else "wrong",
            "",
            message,
            f"Still open: {others}." if others else "",
        ).show()
    return status


def _id_order(exercise_id: str) -> tuple[int, str]:
    number, _, name = exercise_id.partition(".")
    return (int(number) if number.isdigit() else 0, name)


def compare_prediction(guess: Any, measured: float, tolerance: float, unit: str = "") -> bool:
    """The second half of "predict, then run": set the learner's guess beside the measurement.

    Returns True when the guess is within ``tolerance`` of what was measured. A guess of ``...``
    shows nothing of the measurement, only a request to guess first (so Run All spoils nothing); a
    guess that is not a number is sent back without the measurement.
    """
    if guess is Ellipsis:
        print(
            "Write your guess in place of the ... above and run that cell first; the measurement shows after."
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


def _load_all() -> list:
    return [
        importlib.import_module(f"{__name__}.{module.name}")
        for module in pkgutil.iter_modules(__path__)
        if module.name.startswith("nb")
    ]


_CHECKERS = _load_all()
# The checker modules' helpers and adapterlib.unified are forbidden to every answer, except what check
# hands back for an exercise (a later exercise may build on it: notebook 4's injection on LoRALinear).
_HANDED_OUT = code_objects(part for entry in EXERCISES.values() for part in entry.fallback_parts())
ALWAYS_FORBIDDEN = {
    key: name for key, name in code_objects((*_CHECKERS, unified)).items() if key not in _HANDED_OUT
}
_PRISTINE = Pristine([*_CHECKERS, contract])
_PRISTINE.add(
    sys.modules[__name__],
    by_identity=(
        "EXERCISES",
        "_settings",
        "_reference_seconds",
        "_progress",
        "_PRISTINE",
        "ALWAYS_FORBIDDEN",
    ),
)
