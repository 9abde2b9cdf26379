"""The checker's contract: answers graded by behaviour, a wrong or missing answer never feeds later cells."""

import pytest
from torch import nn

import adapterlib
from adapterlib import exercises
from adapterlib.exercises import NotYet, check, exercise, grade, require_correct_answers


def reference_double():
    return lambda x: 2 * x


@exercise("test.double", kind="function", reference=reference_double)
def grade_double(answer) -> str:
    wrong = [x for x in range(-3, 4) if answer(x) != 2 * x]
    if wrong:
        raise NotYet(f"wrong on {len(wrong)} of 7 inputs")
    return "right on 7 inputs"


def test_a_right_answer_is_returned_as_is(capsys):
    def double(x):
        return x + x

    assert check("test.double", double) is double
    assert "Correct: right on 7 inputs" in capsys.readouterr().out


def test_a_wrong_answer_is_explained_and_replaced_by_the_reference(capsys):
    def double(x):
        return x * x

    used = check("test.double", double)
    assert used is not double and used(5) == 10
    out = capsys.readouterr().out
    assert "Not yet: wrong on 5 of 7 inputs" in out and "package's version" in out


def test_an_unanswered_template_falls_back_to_the_reference(capsys):
    def double(x):
        raise NotImplementedError

    assert check("test.double", double)(4) == 8
    assert "Not answered yet" in capsys.readouterr().out


def test_solutions_mode_raises_on_wrong_and_missing_answers():
    require_correct_answers()
    try:
        with pytest.raises(NotYet, match="wrong on"):
            check("test.double", lambda x: x)
        with pytest.raises(NotYet, match="not answered"):
            check("test.double", ...)
    finally:
        require_correct_answers(False)


@pytest.mark.parametrize(
    "package_code",
    [
        adapterlib.BottleneckAdapter,
        adapterlib.BottleneckAdapter(8, 2),
        adapterlib.get_peft_model,
        type("Sub", (adapterlib.LoraLinear,), {}),
    ],
)
def test_package_code_is_refused(package_code):
    with pytest.raises(NotYet, match="package's own"):
        grade("test.double", package_code)


def test_learner_code_is_not_mistaken_for_package_code():
    class Mine(nn.Module):
        pass

    assert not exercises.is_package_code(Mine) and not exercises.is_package_code(Mine())
    assert not exercises.is_package_code(12)


def test_an_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="1.bottleneck"):
        grade("1.bottlenek", None)
