"""The grading contract, tried on every registered exercise: each cheat is refused with feedback.

The cheats are built from what each registration declares (its kind and its fallback), and, where
a cheat needs a right answer to hide behind, from the solutions notebooks' own answers. A new
exercise gets all of these tests by being registered (and by its solution cell).
"""

from __future__ import annotations

import ast
import inspect
import json
import linecache
import random
import re
import sys
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from adapterlib import AdapterConfig, TaskType, get_peft_model
from adapterlib.exercises import (
    EXERCISES,
    NotYet,
    check,
    compare_prediction,
    grade,
    grade_reference,
    progress,
    require_correct_answers,
    set_time_limit,
)
from adapterlib.exercises.feedback import Feedback
from conftest import tiny_classifier

SOLUTIONS_DIR = Path(__file__).resolve().parents[1] / "notebooks" / "solutions"
EXERCISE_IDS = sorted(i for i in EXERCISES if i[:1].isdigit())
CODE_IDS = [i for i in EXERCISE_IDS if EXERCISES[i].kind in ("class", "function", "pair")]
VALUE_IDS = [i for i in EXERCISE_IDS if EXERCISES[i].kind in ("number", "choice")]
FALLBACK_IDS = [i for i in CODE_IDS if EXERCISES[i].reference is not None]


# ---------------------------------------------------------------- what the cheats are built from


def two_adapters() -> nn.Module:
    """A tiny classifier with adapters 'default' and 'negation' that differ, in train mode (for 3.switch)."""
    model = get_peft_model(tiny_classifier(), AdapterConfig(task_type=TaskType.SEQ_CLS, r=4, dropout=0.1))
    model.add_adapter("negation", AdapterConfig(task_type=TaskType.SEQ_CLS, r=4, dropout=0.1))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapters." in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    model.set_adapter("default")
    return model.train()


PAIRED_WITH: dict[str, Callable[[], Any]] = {"3.switch": two_adapters}  # what a "pair" answer is tried on


def as_answer(exercise_id: str, code: Any) -> Any:
    """The learner's function or class as the exercise takes it (a pair gets its object)."""
    return (code, PAIRED_WITH[exercise_id]()) if EXERCISES[exercise_id].kind == "pair" else code


def _definition_cell(cells: list[str], index: int, name: str) -> str | None:
    """The code that defines ``name`` for the check in ``cells[index]``: that cell or the latest before it."""
    defines = re.compile(rf"^(def|class) {name}\b|^{name}\s*(:[^=]*)?=(?!\s*check\()", re.MULTILINE)
    for cell in reversed(cells[: index + 1]):
        if defines.search(cell):
            return cell
    return None


def run_as_learner(source: str, filename: str, namespace: dict[str, Any]) -> None:
    """Run ``source`` as a notebook cell is run: its lines known to linecache, so tracebacks can quote them."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    exec(compile(source, filename, "exec"), namespace)


def solution_answers() -> dict[str, Any]:
    """``{exercise id: answer}`` from the solutions notebooks: each answer's defining cell, run in order in
    one namespace per notebook after its imports, without the ``check`` lines. Answers whose cells need
    results of other cells (a trained model) are left out."""
    found: dict[str, Any] = {}
    for path in sorted(SOLUTIONS_DIR.glob("*.ipynb")):
        cells = [
            "".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"
        ]
        imports = "\n".join(
            ast.get_source_segment(cell, node)
            for cell in cells
            for node in ast.parse(cell).body
            if isinstance(node, (ast.Import, ast.ImportFrom))
        )
        namespace: dict[str, Any] = {"__name__": "solution"}
        run_as_learner(imports, f"<learner imports {path.name}>", namespace)
        for index, cell in enumerate(cells):
            for exercise_id, name in re.findall(r'check\("([^"]+)",\s*(\w+)\)', cell):
                source = _definition_cell(cells, index, name)
                if source is None or exercise_id in PAIRED_WITH:
                    continue
                kept = "\n".join(
                    line
                    for line in source.splitlines()
                    if "check(" not in line and "require_correct" not in line
                )
                try:
                    run_as_learner(kept, f"<learner solution {exercise_id}>", namespace)
                except Exception:
                    continue  # the cell needs results of cells before it
                if name in namespace:
                    found[exercise_id] = namespace[name]
    return found


SOLUTIONS = solution_answers()
SOLVED_IDS = [i for i in CODE_IDS if i in SOLUTIONS]


def refused(exercise_id: str, answer: Any, capsys) -> str:
    """Check ``answer`` as a notebook would; assert it is refused with feedback and the fallback returned."""
    entry = EXERCISES[exercise_id]
    returned = check(exercise_id, answer)
    shown = capsys.readouterr().out
    assert "✘ Not yet" in shown and "Correct" not in shown, shown
    if entry.reference is not None:
        fallback = entry.fallback()
        assert returned is fallback or (isinstance(fallback, tuple) and returned[0] is fallback[0])
    assert "Traceback" not in shown
    return shown


def fallback_function(exercise_id: str) -> Callable:
    return EXERCISES[exercise_id].fallback_parts()[0]


# ---------------------------------------------------------------- the graders themselves


@pytest.mark.parametrize("exercise_id", EXERCISE_IDS)
def test_every_exercise_declares_its_kind(exercise_id):
    entry = EXERCISES[exercise_id]
    assert entry.kind in ("class", "function", "pair", "number", "choice")
    assert (entry.reference is None) == (entry.kind in ("number", "choice"))
    if entry.kind == "pair":
        assert exercise_id in PAIRED_WITH, "say in PAIRED_WITH what a pair answer is tried on"


@pytest.mark.parametrize("exercise_id", [i for i in FALLBACK_IDS if EXERCISES[i].kind != "pair"])
def test_the_package_version_passes_its_own_grader(exercise_id):
    assert grade_reference(exercise_id)


@pytest.mark.parametrize("exercise_id", SOLVED_IDS)
def test_the_solutions_notebook_answer_passes(exercise_id, capsys):
    answer = as_answer(exercise_id, SOLUTIONS[exercise_id])
    assert check(exercise_id, answer) is answer
    assert "✔ Correct" in capsys.readouterr().out


def test_the_solutions_cover_the_exercises():
    """Every code exercise but the paired one has its answer in a solutions notebook, found and runnable."""
    assert set(CODE_IDS) - set(SOLUTIONS) <= set(PAIRED_WITH)


# ---------------------------------------------------------------- cheat 1: the fallback, run again


@pytest.mark.parametrize("exercise_id", FALLBACK_IDS)
def test_the_fallback_run_again_is_not_graded(exercise_id, capsys):
    wrong = check(exercise_id, ...)  # first run: unanswered, the package's version comes back
    first = capsys.readouterr().out
    assert "Not answered yet" in first and "fix it" not in first
    if EXERCISES[exercise_id].kind == "pair":
        wrong = (wrong[0], PAIRED_WITH[exercise_id]())
    shown = refused(exercise_id, wrong, capsys)  # second run of the same cell
    assert "package's version" in shown and "earlier try" in shown


@pytest.mark.parametrize("exercise_id", [i for i in FALLBACK_IDS if EXERCISES[i].kind == "class"])
def test_a_subclass_or_instance_of_the_fallback_is_not_graded(exercise_id, capsys):
    fallback = EXERCISES[exercise_id].fallback()
    shown = refused(exercise_id, type("Mine", (fallback,), {}), capsys)
    assert "package's version" in shown


# ---------------------------------------------------------------- cheat 2: a wrapper around the package


@pytest.mark.parametrize("exercise_id", [i for i in FALLBACK_IDS if EXERCISES[i].kind != "class"])
def test_a_function_wrapping_the_package_is_refused(exercise_id, capsys):
    package = fallback_function(exercise_id)

    def mine(*args, **kwargs):
        return package(*args, **kwargs)

    assert "calls the package's" in refused(exercise_id, as_answer(exercise_id, mine), capsys)


@pytest.mark.parametrize("exercise_id", [i for i in FALLBACK_IDS if EXERCISES[i].kind != "class"])
def test_a_wrapper_that_calls_the_package_in_another_thread_is_refused(exercise_id, capsys):
    package = fallback_function(exercise_id)

    def mine(*args, **kwargs):
        box = []
        worker = threading.Thread(target=lambda: box.append(package(*args, **kwargs)))
        worker.start()
        worker.join()
        return box[0] if box else None

    assert "calls the package's" in refused(exercise_id, as_answer(exercise_id, mine), capsys)


@pytest.mark.parametrize("exercise_id", [i for i in FALLBACK_IDS if EXERCISES[i].kind != "class"])
def test_a_copy_of_the_package_code_is_refused(exercise_id, capsys):
    package = inspect.unwrap(fallback_function(exercise_id))
    copy_of_it = types.FunctionType(
        package.__code__.replace(), package.__globals__, "mine", package.__defaults__, package.__closure__
    )
    assert "the package's own implementation" in refused(
        exercise_id, as_answer(exercise_id, copy_of_it), capsys
    )


@pytest.mark.parametrize("exercise_id", [i for i in FALLBACK_IDS if EXERCISES[i].kind == "class"])
def test_a_class_wrapping_the_package_is_refused(exercise_id, capsys):
    package = EXERCISES[exercise_id].fallback()

    class Mine(nn.Module):
        def __init__(self, *args, **kwargs):
            super().__init__()
            self.inner = package(*args, **kwargs)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.inner, name)

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    assert "calls the package's" in refused(exercise_id, Mine, capsys)


@pytest.mark.parametrize("exercise_id", [i for i in FALLBACK_IDS if EXERCISES[i].kind == "class"])
def test_a_class_borrowing_the_package_methods_is_refused(exercise_id, capsys):
    package = EXERCISES[exercise_id].fallback()
    borrowed = {
        name: value
        for cls in reversed(package.__mro__)
        if cls.__module__.startswith("adapterlib")
        for name, value in vars(cls).items()
        if not name.startswith("__") or name in ("__init__",)
    }
    shown = refused(exercise_id, type("Mine", (nn.Module,), borrowed), capsys)
    assert "the package's own implementation" in shown or "calls the package's" in shown, shown


# ---------------------------------------------------------------- cheat 3: changing the grader


def grader_module(exercise_id: str):
    return sys.modules[EXERCISES[exercise_id].grade.__module__]


def permissive(module) -> dict[str, Any]:
    """Every function of the checker module replaced by one that says yes, every number made huge."""
    changes: dict[str, Any] = {}
    for name, value in vars(module).items():
        if name.startswith("__") or name.startswith("grade_"):
            continue
        if callable(value) and not isinstance(value, type):
            changes[name] = lambda *args, **kwargs: True
        elif isinstance(value, float):
            changes[name] = 1e9
        elif isinstance(value, list):
            changes[name] = []
    return changes


def code_answer(exercise_id: str, body: Callable[[], Any]) -> Any:
    """An answer of the exercise's kind that runs ``body`` as soon as the grader uses it."""
    if EXERCISES[exercise_id].kind == "class":

        class Mine(nn.Module):
            def __init__(self, *args, **kwargs):
                super().__init__()
                body()

        return Mine

    def mine(*args, **kwargs):
        return body()

    return as_answer(exercise_id, mine)


@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_an_answer_that_changes_the_grader_is_refused_and_the_grader_put_back(exercise_id, capsys):
    module = grader_module(exercise_id)
    before = dict(vars(module))

    def tamper():
        for name, value in permissive(module).items():
            setattr(module, name, value)

    shown = refused(exercise_id, code_answer(exercise_id, tamper), capsys)
    assert "changed the grader" in shown
    assert all(vars(module)[name] is value for name, value in before.items())


@pytest.mark.parametrize("exercise_id", EXERCISE_IDS)
def test_a_grader_changed_before_the_check_is_put_back_first(exercise_id, capsys, monkeypatch):
    module = grader_module(exercise_id)
    for name, value in permissive(module).items():
        monkeypatch.setattr(module, name, value)
    wrong = (
        ""
        if EXERCISES[exercise_id].kind == "choice"
        else -987.5  # no exercise's answer
        if EXERCISES[exercise_id].kind == "number"
        else None
    )
    if EXERCISES[exercise_id].kind in ("class", "function", "pair"):
        wrong = code_answer(exercise_id, lambda: None)
    refused(exercise_id, wrong, capsys)


LIBRARY_PATCHES = {
    "torch.allclose": (torch, "allclose"),
    "math.isclose": (__import__("math"), "isclose"),
    "Tensor.equal": (torch.Tensor, "equal"),
}


@pytest.mark.parametrize("patched", LIBRARY_PATCHES)
@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_an_answer_that_replaces_a_library_function_is_refused_and_it_put_back(exercise_id, patched, capsys):
    owner, name = LIBRARY_PATCHES[patched]
    original = getattr(owner, name)

    def body():
        setattr(owner, name, lambda *args, **kwargs: True)

    try:
        shown = refused(exercise_id, code_answer(exercise_id, body), capsys)
    finally:
        restored = getattr(owner, name)
        if name in vars(owner) and restored is not original:
            setattr(owner, name, original)
    assert restored is original
    assert "changed the grader" in shown and patched.split(".")[-1] in shown, shown


def disguise(value: Any) -> Any:
    """The same values, as subclasses that could answer comparisons as they like."""
    if type(value) is torch.Tensor:
        return value.as_subclass(type("LyingTensor", (torch.Tensor,), {}))
    if type(value) is int:
        return type("LyingInt", (int,), {})(value)
    if type(value) is float:
        return type("LyingFloat", (float,), {})(value)
    if isinstance(value, tuple):
        return tuple(disguise(item) for item in value)
    return value


@pytest.mark.parametrize(
    "exercise_id",
    [i for i in SOLVED_IDS if EXERCISES[i].kind == "function" and i not in ("2.freeze", "3.metrics")],
)
def test_a_right_value_returned_as_a_subclass_is_refused(exercise_id, capsys):
    solution = SOLUTIONS[exercise_id]
    disguised_any = []

    def answer(*args):
        result = solution(*args)
        changed = disguise(result)
        disguised_any.append(changed is not result)
        return changed

    returned = check(exercise_id, answer)
    shown = capsys.readouterr().out
    if any(disguised_any):
        assert "✘ Not yet" in shown and "subclass" in shown and returned is not answer, shown
    else:  # it returns a model or a bool, nothing to disguise: the right answer still passes
        assert "✔ Correct" in shown and returned is answer, shown


@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_sys_exit_in_an_answer_becomes_feedback(exercise_id, capsys):
    assert "sys.exit" in refused(exercise_id, code_answer(exercise_id, lambda: sys.exit(1)), capsys)


@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_endless_recursion_is_named_as_such(exercise_id, capsys):
    def again():
        return again()

    shown = refused(exercise_id, code_answer(exercise_id, again), capsys)
    assert "calls itself without end" in shown and "setprofile" not in shown, shown


@pytest.mark.parametrize("exercise_id", [i for i in SOLVED_IDS if EXERCISES[i].kind == "class"])
def test_a_misspelt_forward_is_not_taken_for_an_unanswered_exercise(exercise_id, capsys):
    solution = SOLUTIONS[exercise_id]
    misspelt = type("Mine", (solution,), {"foward": solution.forward})
    misspelt.forward = nn.Module.forward
    shown = refused(exercise_id, misspelt, capsys)
    assert "forward" in shown and "Not answered" not in shown, shown


# ---------------------------------------------------------------- cheat 4: changing the inputs


def mutate(value: Any, seen: set[int]) -> bool:
    """Zero every tensor, array and module parameter reachable from ``value``; True if anything was."""
    if id(value) in seen:
        return False
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        with torch.no_grad():
            value.zero_()
        return True
    if isinstance(value, np.ndarray):
        value[...] = 0
        return True
    if isinstance(value, nn.Module):
        with torch.no_grad():
            for parameter in value.parameters():
                parameter.zero_()
        return True
    if isinstance(value, (list, tuple)):
        return any([mutate(item, seen) for item in value])
    if isinstance(value, dict):
        return any([mutate(item, seen) for item in value.values()])
    if hasattr(value, "__dict__") and not callable(value):
        return any([mutate(item, seen) for item in vars(value).values()])
    return False


@pytest.mark.parametrize("exercise_id", [i for i in SOLVED_IDS if EXERCISES[i].kind == "function"])
def test_an_answer_that_overwrites_its_inputs_gains_nothing(exercise_id, capsys):
    """The solution, answering for inputs it has zeroed: right for what it left, wrong for what it got."""
    solution = SOLUTIONS[exercise_id]
    mutated: list[bool] = []

    def mine(*args):
        mutated.append(mutate(args, set()))
        return solution(*args)

    returned = check(exercise_id, mine)
    shown = capsys.readouterr().out
    if any(mutated):
        assert "✘ Not yet" in shown and returned is not mine, shown
    else:  # numbers only: nothing to overwrite, and the solution stays right
        assert "✔ Correct" in shown


# ---------------------------------------------------------------- cheat 5: leaving global state changed


def settings() -> tuple:
    return (
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
        torch.get_num_threads(),
        torch.get_default_device(),
        torch.get_float32_matmul_precision(),
    )


STATE_CHANGES = {
    "default dtype": lambda: torch.set_default_dtype(torch.float64),
    "grad mode": lambda: torch.set_grad_enabled(False),
    "thread count": lambda: torch.set_num_threads(max(1, torch.get_num_threads() - 1) or 1),
    "default device": lambda: torch.set_default_device("meta"),
    "matmul precision": lambda: torch.set_float32_matmul_precision("medium"),
}


@pytest.mark.parametrize(
    "change", [n for n in STATE_CHANGES if n != "thread count" or torch.get_num_threads() > 1]
)
@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_an_answer_that_leaves_global_state_changed_is_refused_and_the_state_put_back(
    exercise_id, change, capsys
):
    before = settings()
    solution = SOLUTIONS.get(exercise_id)

    def body():
        STATE_CHANGES[change]()

    if solution is not None and EXERCISES[exercise_id].kind == "function":

        def answer(*args):
            STATE_CHANGES[change]()
            return solution(*args)

    else:
        answer = code_answer(exercise_id, body)
    returned = check(exercise_id, answer)
    shown = capsys.readouterr().out
    assert settings() == before
    if change == "grad mode" and "✔ Correct" in shown:
        return  # the grader ran the answer inside its own no_grad block, which undid the change: nothing leaked
    assert "✘ Not yet" in shown and "and left it so" in shown, shown
    assert returned is not answer


@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_no_check_moves_the_learners_random_state(exercise_id, capsys):
    answer = SOLUTIONS.get(exercise_id) or code_answer(exercise_id, lambda: torch.manual_seed(0))
    if EXERCISES[exercise_id].kind == "pair" and not isinstance(answer, tuple):
        answer = as_answer(exercise_id, answer)
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    check(exercise_id, answer)
    capsys.readouterr()
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


# ---------------------------------------------------------------- cheat 6: an exception


@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_the_learners_exception_becomes_feedback_with_its_line(exercise_id, capsys):
    def body():
        raise ValueError("a slip of the learner")

    shown = refused(exercise_id, code_answer(exercise_id, body), capsys)
    assert "ValueError: a slip of the learner" in shown
    assert 'raise ValueError("a slip of the learner")' in shown  # the learner's own line
    assert "adapterlib" not in shown  # no grader internals


@pytest.mark.parametrize("exercise_id", [i for i in SOLVED_IDS if EXERCISES[i].kind == "class"])
def test_an_exception_in_forward_becomes_feedback(exercise_id, capsys):
    class Mine(SOLUTIONS[exercise_id]):
        def forward(self, *args, **kwargs):
            raise RuntimeError("forward slipped")

    assert "RuntimeError: forward slipped" in refused(exercise_id, Mine, capsys)


# ---------------------------------------------------------------- cheat 7: a wrong return type

WRONG_RETURNS = {"a tuple": (1, 2), "None": None, "a string": "8", "a list": [0.5]}


@pytest.mark.parametrize("returned", WRONG_RETURNS)
@pytest.mark.parametrize("exercise_id", [i for i in CODE_IDS if EXERCISES[i].kind != "class"])
def test_a_wrong_return_type_is_named(exercise_id, returned, capsys):
    shown = refused(exercise_id, code_answer(exercise_id, lambda: WRONG_RETURNS[returned]), capsys)
    assert "could not use" not in shown  # each grader checks types itself, in the exercise's words


@pytest.mark.parametrize("exercise_id", [i for i in SOLVED_IDS if EXERCISES[i].kind == "class"])
def test_a_forward_that_returns_a_tuple_is_named(exercise_id, capsys):
    class Mine(SOLUTIONS[exercise_id]):
        def forward(self, *args, **kwargs):
            return (super().forward(*args, **kwargs),)

    shown = refused(exercise_id, Mine, capsys)
    assert "could not use" not in shown


# ---------------------------------------------------------------- cheat 8: an endless loop


@pytest.fixture
def short_time_limit():
    set_time_limit(0.3, reference_factor=0.0)
    yield
    set_time_limit()


@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_an_endless_loop_is_stopped(exercise_id, capsys, short_time_limit):
    def body():
        while True:
            pass

    assert "still running after 0.3 s" in refused(exercise_id, code_answer(exercise_id, body), capsys)


def test_the_time_limit_leaves_no_pending_stop_behind(short_time_limit, capsys):
    """After a stopped grade, the kernel goes on: later code (profiled or not) is neither stopped nor slowed."""

    def body():
        while True:
            pass

    refused("1.count", body, capsys)
    set_time_limit()
    started = time.perf_counter()
    assert check("1.count", SOLUTIONS["1.count"]) is SOLUTIONS["1.count"]
    total = sum(i for i in range(200_000))
    assert total == 199_999 * 200_000 // 2 and time.perf_counter() - started < 20


def test_a_slow_right_answer_gets_the_longer_limit(capsys):
    """Past the floor, a right answer is graded again with reference_factor x the reference's time."""
    right = SOLUTIONS["1.count"]
    calls = []

    def slow(*args):
        if not calls:
            time.sleep(0.5)
        calls.append(args)
        return right(*args)

    set_time_limit(0.1, reference_factor=10_000.0)
    try:
        assert check("1.count", slow) is slow
    finally:
        set_time_limit()
    assert "Correct" in capsys.readouterr().out


# ---------------------------------------------------------------- numbers and choices


class Liar(int):
    """An int that equals everything."""

    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize(
    "answer",
    [
        Liar(1),
        type("Eq", (str,), {"__eq__": lambda s, o: True, "__hash__": str.__hash__})("x"),
        [1],
        object(),
    ],
)
@pytest.mark.parametrize("exercise_id", VALUE_IDS)
def test_a_value_that_is_not_plain_is_refused(exercise_id, answer, capsys):
    shown = refused(exercise_id, answer, capsys)
    assert "should be a plain number" in shown or "should be a string or a set of strings" in shown


# ---------------------------------------------------------------- strict mode, progress, display, predictions


@pytest.mark.parametrize("exercise_id", CODE_IDS)
def test_strict_mode_raises_on_a_cheat(exercise_id):
    require_correct_answers()
    try:
        with pytest.raises(NotYet, match="Not yet"):
            check(exercise_id, code_answer(exercise_id, lambda: None))
    finally:
        require_correct_answers(False)


def test_progress_names_the_passed_and_the_open_exercises(capsys):
    check("4.scaling", 1.0)
    check("6.merges", "adapter")
    status = progress("", show=True)
    shown = capsys.readouterr().out
    assert status["4.scaling"] == "passed" and status["6.merges"] == "not yet"
    assert set(status) == set(EXERCISE_IDS)
    assert "4.scaling" in shown and "exercises passed in this kernel" in shown
    assert progress("4.", show=False).keys() == {i for i in EXERCISE_IDS if i.startswith("4.")}


@pytest.mark.parametrize(("kind", "symbol", "word"), [("correct", "✔", "Correct"), ("wrong", "✘", "Not yet")])
def test_right_and_wrong_differ_in_symbol_word_and_colour(kind, symbol, word):
    feedback = Feedback(kind, "1.count", "a message that is long enough to wrap at the end of a line")
    markup = feedback._repr_html_()
    assert feedback.text().startswith(f"[1.count] {symbol} {word}:")
    assert f"{symbol} {word}" in markup and "<pre" not in markup and "overflow-wrap: anywhere" not in markup
    assert "white-space: normal" in markup


def test_an_unanswered_prediction_shows_no_measurement(capsys):
    assert compare_prediction(..., 1234.5, tolerance=1) is False
    shown = capsys.readouterr().out
    assert "1234" not in shown and len(shown.strip().splitlines()) == 1


@pytest.mark.parametrize("exercise_id", EXERCISE_IDS)
def test_feedback_carries_no_markdown(exercise_id, capsys):
    kind = EXERCISES[exercise_id].kind
    answer = (
        {"number": 0, "choice": "nothing"}.get(kind)
        if kind in VALUE_IDS or kind in ("number", "choice")
        else None
    )
    if kind in ("class", "function", "pair"):
        answer = code_answer(exercise_id, lambda: None)
    check(exercise_id, answer)
    assert not re.search(r"\*\w[^*]*\*|`{3}", capsys.readouterr().out)


def test_an_unknown_exercise_is_a_key_error():
    with pytest.raises(KeyError):
        grade("0.nothing", None)
