"""The nbgrader course built from the notebooks, graded with nbgrader's own commands in a temporary course.

Notebooks 1 and 6 (the two fastest with exercises) make the course. Five students hand in: the worked solutions, the
untouched release, three typical mistakes, two cheats, and a file that is not a notebook; a sixth is in the gradebook
and hands in nothing.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from adapterlib import course

pytest.importorskip("nbgrader")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = sorted((ROOT / "notebooks" / "solutions").glob("[0-9][0-9]_*.ipynb"))
ASSIGNMENTS = ["01_bottleneck_math", "06_comparison"]
MAX_POINTS = {"01_bottleneck_math": 3, "06_comparison": 4}


def exercise_cells(nb: nbformat.NotebookNode, wanted: str) -> dict[str, nbformat.NotebookNode]:
    return {
        cell.metadata["adapterlib"]["exercise"]: cell
        for cell in nb.cells
        if cell.get("metadata", {}).get("adapterlib", {}).get("role") == wanted
    }


# ---------------------------------------------------------------- the notebooks' cells


@pytest.mark.parametrize("path", NOTEBOOKS + SOLUTIONS, ids=lambda path: path.name)
def test_every_check_sits_alone_after_its_answer(path):
    # an answer cell that ends with its own check line (notebook 10) counts as the two cells the course makes of it
    cells = [
        cell for cell in course.exercise_cells(nbformat.read(path, as_version=4)) if cell.cell_type == "code"
    ]
    checks = 0
    for before, cell in zip(cells, cells[1:]):
        role, exercise_id = course.role(cell)
        if role == "check":
            checks += 1
            assert re.fullmatch(
                rf'(\w+ = )?check\("{re.escape(exercise_id)}", .+\)(\[0\])?;?', cell.source
            ), cell.source
            assert course.role(before) == ("answer", exercise_id), (
                f"{exercise_id}: the cell before is not its answer"
            )
        else:
            assert "check(" not in cell.source.replace("import check", ""), (
                f"check(...) outside a check cell: {cell.source}"
            )
    assert checks > 0


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_committed_outputs_hold_no_measured_answer_to_a_prediction(path):
    for cell in nbformat.read(path, as_version=4).cells:
        if course.role(cell)[0] == "measure":
            text = "".join(
                str(output.get("text", "")) + str(output.get("data", "")) for output in cell.outputs
            )
            assert "Measured" not in text and "predicted" not in text, cell.source


# ---------------------------------------------------------------- building


def test_build_refuses_an_unknown_notebook_and_an_existing_course(tmp_path):
    with pytest.raises(ValueError, match="no notebook numbered 42"):
        course.build(tmp_path / "a", ["42"])
    course.build(tmp_path / "b", ["06"])
    with pytest.raises(FileExistsError, match="exists"):
        course.build(tmp_path / "b", ["06"])
    assert course.main(["build", "--out", str(tmp_path / "b"), "--notebooks", "06"]) == 2


def test_build_refuses_a_notebook_without_graded_cells(tmp_path, capsys):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.read(ROOT / "notebooks" / "10_qlora.ipynb", as_version=4)
    for cell in nb.cells:
        cell.metadata.pop("adapterlib", None)
    nbformat.write(nb, notebooks / "10_qlora.ipynb")
    for numbers in (["10"], None):
        with pytest.raises(ValueError, match="10_qlora.ipynb: no graded exercise"):
            course.build(tmp_path / "out", numbers, notebooks)
    assert not (tmp_path / "out").exists()
    assert course.main(["build", "--out", str(tmp_path / "ten"), "--notebooks", "10"]) == 0
    assert "1 assignments (10_qlora)" in capsys.readouterr().out


def test_every_notebook_builds_with_a_solution_for_each_exercise(tmp_path):
    names = course.build(tmp_path / "all")
    assert names == [path.stem for path in NOTEBOOKS]
    for name in names:
        nb = nbformat.read(tmp_path / "all" / "source" / name / f"{name}.ipynb", as_version=4)
        answers, checks = exercise_cells(nb, "answer"), exercise_cells(nb, "check")
        assert answers.keys() == checks.keys()
        for exercise_id, cell in answers.items():
            assert course.BEGIN in cell.source and cell.metadata["nbgrader"]["solution"]
            test = checks[exercise_id].metadata["nbgrader"]
            assert test["grade"] and test["locked"] and test["points"] in (1, 2)
            assert "require_correct_answers()" in checks[exercise_id].source
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source == course.GRADING_NOTE
        setup = "".join(cell.source for cell in nb.cells if cell.cell_type == "code")
        assert "USE_COMMITTED_ADAPTERS = False" not in setup
        assert ("USE_COMMITTED_ADAPTERS = True" in setup) == (name[:2] in ("03", "04", "05"))
    ten = nbformat.read(tmp_path / "all" / "source" / "10_qlora" / "10_qlora.ipynb", as_version=4)
    assert {i: cell.metadata["nbgrader"]["points"] for i, cell in exercise_cells(ten, "check").items()} == {
        "10.quantize_block": 2,
        "10.dequantize": 1,
        "10.bits_per_weight": 1,
    }
    assert sorted(path.parent.name for path in (tmp_path / "all" / "source").glob("*/trained")) == [
        "03_sst2_adapters",
        "04_lora",
        "05_prefix_tuning",
    ]


# ---------------------------------------------------------------- grading with nbgrader


def test_zip_collect_takes_the_student_from_the_zip_name_whatever_folders_it_holds(tmp_path):
    assignment = "06_comparison"
    (tmp_path / "nbgrader_config.py").write_text(course.CONFIG)
    (tmp_path / "release" / assignment).mkdir(parents=True)
    notebook = (ROOT / "notebooks" / f"{assignment}.ipynb").read_text()
    (tmp_path / "release" / assignment / f"{assignment}.ipynb").write_text(notebook)
    archive = tmp_path / "downloaded" / assignment / "archive"
    archive.mkdir(parents=True)
    inside = {  # what "Compress folder" makes, with macOS's and Jupyter's extra copies; a zip of the file alone
        "grace_06.zip": [
            f"{assignment}/{assignment}.ipynb",
            f"__MACOSX/{assignment}/._{assignment}.ipynb",
            f"{assignment}/.ipynb_checkpoints/{assignment}-checkpoint.ipynb",
        ],
        "alan_06_comparison.zip": [f"{assignment}.ipynb"],
    }
    for name, members in inside.items():
        with zipfile.ZipFile(archive / name, "w") as zipped:
            for member in members:
                zipped.writestr(member, notebook)
    collected = nbgrader(tmp_path, "zip_collect", assignment)
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "submitted").rglob("*.ipynb")) == [
        f"submitted/alan/{assignment}/{assignment}.ipynb",
        f"submitted/grace/{assignment}/{assignment}.ipynb",
    ]


def nbgrader(course_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "nbgrader", *args],
        cwd=course_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def solutions(assignment: str) -> dict[str, str]:
    nb = nbformat.read(ROOT / "notebooks" / "solutions" / f"{assignment}_solutions.ipynb", as_version=4)
    return {exercise_id: cell.source for exercise_id, cell in exercise_cells(nb, "answer").items()}


MISTAKES = {  # three typical mistakes, one exercise each
    "1.count": "def adapter_parameters(d, r, bias=True):\n    return 2 * d * r  # the biases forgotten",
    "6.sampling_interval": "def sampling_interval(p, n):\n    return 1.96 * p * (1 - p) / n  # the sqrt forgotten",
    "6.merges": 'answer = "adapter"',
}
CHEATS = {
    "1.bottleneck": "import adapterlib\n\nBottleneck = adapterlib.BottleneckAdapter",
    "1.count": (
        "from adapterlib.exercises import check, require_correct_answers\n\n"
        "require_correct_answers(False)\nadapter_parameters = check('1.count', ...)  # the package's fallback"
    ),
}


def hand_in(
    course_dir: Path, student: str, assignment: str, answers: dict[str, str] | None, raw: str = ""
) -> None:
    release = course_dir / "release" / assignment / f"{assignment}.ipynb"
    folder = course_dir / "submitted" / student / assignment
    folder.mkdir(parents=True)
    if answers is None:
        (folder / release.name).write_text(raw)
        return
    nb = nbformat.read(release, as_version=4)
    for exercise_id, cell in exercise_cells(nb, "answer").items():
        cell.source = answers.get(exercise_id, cell.source)
    nbformat.write(nb, folder / release.name)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course_dir = tmp_path_factory.mktemp("course")
    assert course.build(course_dir, ["01", "06"]) == ASSIGNMENTS
    runs = {}
    for assignment in ASSIGNMENTS:
        generated = nbgrader(course_dir, "generate_assignment", assignment)
        assert generated.returncode == 0, generated.stderr[-3000:]
        hand_in(course_dir, "solved", assignment, solutions(assignment))
        hand_in(course_dir, "mistaken", assignment, {**solutions(assignment), **MISTAKES})
    hand_in(course_dir, "untouched", "01_bottleneck_math", {})
    hand_in(course_dir, "cheater", "01_bottleneck_math", CHEATS)
    hand_in(course_dir, "damaged", "01_bottleneck_math", None, raw='{"cells": [')
    assert nbgrader(course_dir, "db", "student", "add", "absent").returncode == 0
    for assignment in ASSIGNMENTS:
        runs[assignment] = nbgrader(course_dir, "autograde", assignment)
        runs[f"feedback {assignment}"] = nbgrader(course_dir, "generate_feedback", assignment)
    runs["export"] = nbgrader(course_dir, "export")
    assert (
        course.main(["grades", "--course", str(course_dir), "--out", str(course_dir / "by_exercise.csv")])
        == 0
    )
    with (course_dir / "grades.csv").open() as file:
        exported = {(row["student_id"], row["assignment"]): row for row in csv.DictReader(file)}
    with (course_dir / "by_exercise.csv").open() as file:
        ours = {(row["student"], row["assignment"]): row for row in csv.DictReader(file)}
    return course_dir, runs, exported, ours


def test_the_release_is_the_self_study_stub_without_solutions(graded):
    course_dir = graded[0]
    for assignment in ASSIGNMENTS:
        release = nbformat.read(course_dir / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        own = nbformat.read(ROOT / "notebooks" / f"{assignment}.ipynb", as_version=4)
        stubs = {i: cell.source.strip() for i, cell in exercise_cells(own, "answer").items()}
        assert {i: cell.source.strip() for i, cell in exercise_cells(release, "answer").items()} == stubs
        assert not any(cell.get("outputs") for cell in release.cells)
        assert (
            "BEGIN SOLUTION" not in (course_dir / "release" / assignment / f"{assignment}.ipynb").read_text()
        )


def test_nbgrader_commands_run(graded):
    course_dir, runs = graded[:2]
    assert runs["06_comparison"].returncode == 0, runs["06_comparison"].stderr[-3000:]
    failures = [
        line
        for line in runs["01_bottleneck_math"].stderr.splitlines()
        if "error processing assignment" in line
    ]
    assert failures and all("damaged" in line for line in failures)  # only the damaged submission fails
    assert runs["export"].returncode == 0, runs["export"].stderr[-3000:]
    for assignment in ASSIGNMENTS:
        assert runs[f"feedback {assignment}"].returncode == 0
        assert (course_dir / "feedback" / "solved" / assignment / f"{assignment}.html").is_file()


@pytest.mark.parametrize(
    ("student", "assignment", "score", "status"),
    [
        ("solved", "01_bottleneck_math", 3, "ok"),
        ("solved", "06_comparison", 4, "ok"),
        ("untouched", "01_bottleneck_math", 0, "untouched"),
        ("mistaken", "01_bottleneck_math", 2, "ok"),  # 1.count wrong: 1.bottleneck's 2 points
        ("mistaken", "06_comparison", 2, "ok"),  # 6.sampling_interval and 6.merges wrong: 6.significant's 2
        ("cheater", "01_bottleneck_math", 0, "ok"),
        ("damaged", "01_bottleneck_math", 0, "damaged"),
        ("untouched", "06_comparison", 0, "missing"),  # handed in only notebook 1
        ("absent", "01_bottleneck_math", 0, "missing"),  # in the gradebook, handed in nothing
        ("absent", "06_comparison", 0, "missing"),
    ],
)
def test_scores_and_status(graded, student, assignment, score, status):
    exported, ours = graded[2:]
    if status != "missing":  # nbgrader's export lists only the submitted
        assert float(exported[student, assignment]["raw_score"]) == score
        assert float(exported[student, assignment]["max_score"]) == MAX_POINTS[assignment]
    assert float(ours[student, assignment]["total"]) == score
    assert ours[student, assignment]["status"] == status


def test_points_per_exercise(graded):
    ours = graded[3]
    assert {k: ours["mistaken", "01_bottleneck_math"][k] for k in ("1.count", "1.bottleneck")} == {
        "1.count": "0",
        "1.bottleneck": "2",
    }
    assert ours["mistaken", "01_bottleneck_math"]["6.merges"] == ""  # not an exercise of this assignment
    assert {
        k: ours["mistaken", "06_comparison"][k] for k in ("6.sampling_interval", "6.significant", "6.merges")
    } == {
        "6.sampling_interval": "0",
        "6.significant": "2",
        "6.merges": "0",
    }


def test_status_names_deleted_and_renamed_cells(graded):
    course_dir = graded[0]
    assignment = "01_bottleneck_math"
    solved = course_dir / "submitted" / "solved" / assignment / f"{assignment}.ipynb"
    for student, change in [("deleting", "delete"), ("renaming", "rename")]:
        nb = copy.deepcopy(nbformat.read(solved, as_version=4))
        cells = [cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == "1-count"]
        if change == "delete":
            nb.cells.remove(cells[0])
        else:
            cells[0].metadata["nbgrader"]["grade_id"] = "1-counting"
        (course_dir / "submitted" / student / assignment).mkdir(parents=True)
        nbformat.write(nb, course_dir / "submitted" / student / assignment / solved.name)
        state, detail = course.status(course_dir, student, assignment, solved.name)
        assert (state, detail) == ("damaged", "graded cells deleted or renamed: 1.count")


def test_review_names_the_answers_that_reach_into_the_grader(graded):
    course_dir, ours = graded[0], graded[3]
    assert ours["cheater", "01_bottleneck_math"]["review"] == (
        "1.count: the grader (adapterlib.exercises), strict mode"
    )
    assert all(ours["solved", assignment]["review"] == "" for assignment in ASSIGNMENTS)
    assert ours["mistaken", "06_comparison"]["review"] == ""
    replacing = {
        "1.bottleneck": "import adapterlib.exercises\n\nadapterlib.exercises.check = lambda exercise_id, answer: answer"
    }
    hand_in(course_dir, "replacing", "01_bottleneck_math", {**solutions("01_bottleneck_math"), **replacing})
    assert course.review(course_dir, "replacing", "01_bottleneck_math", "01_bottleneck_math.ipynb") == (
        "1.bottleneck: the grader (adapterlib.exercises), check replaced, a module's attribute set"
    )
    # the setup cell, which imports check, edited innocently: only the lines the release lacks are read
    solved = course_dir / "submitted" / "solved" / "01_bottleneck_math" / "01_bottleneck_math.ipynb"
    nb = nbformat.read(solved, as_version=4)
    folder = course_dir / "submitted" / "editing" / "01_bottleneck_math"
    folder.mkdir(parents=True)
    setup = next(
        cell for cell in nb.cells if "import check" in cell.source and "nbgrader" not in cell.metadata
    )
    setup.source += "\nimport math"
    nbformat.write(nb, folder / "01_bottleneck_math.ipynb")
    assert course.review(course_dir, "editing", "01_bottleneck_math", "01_bottleneck_math.ipynb") == ""
    setup.source += "\nimport sys\nsys.setprofile(None)"
    nbformat.write(nb, folder / "01_bottleneck_math.ipynb")
    number = nb.cells.index(setup) + 1
    assert course.review(course_dir, "editing", "01_bottleneck_math", "01_bottleneck_math.ipynb") == (
        f"cell {number}: a profile or trace hook"
    )
