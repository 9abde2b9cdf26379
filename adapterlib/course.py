"""The notebooks as an nbgrader course: build it, and read its grades with a status per submission.

``python -m adapterlib.course build --out COURSE`` writes an nbgrader course folder, one assignment per notebook::

    COURSE/nbgrader_config.py                       cell timeout, an empty solution stub
    COURSE/source/01_bottleneck_math/01_bottleneck_math.ipynb
    COURSE/source/03_sst2_adapters/trained/...      the committed adapters a notebook loads

Each exercise is two cells in the notebooks (their ``adapterlib`` cell metadata says which):

* the learner's **answer** cell becomes an nbgrader solution cell. Its source version is the learner's stub followed by
  the worked answer from ``notebooks/solutions/`` between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the
  release replaces that region with nothing, so learners get exactly the stub of the self-study notebooks;
* the **check** cell, ``X = check("id", X)``, becomes a locked autograded test cell worth the exercise's points. It
  switches the checker to strict mode first (:func:`~adapterlib.exercises.require_correct_answers`), so a wrong or
  missing answer raises and scores 0; it imports ``check`` afresh, so an answer that rebinds ``check`` or turns
  strict mode off earlier gains nothing, and it refuses the package's fallback that an unanswered ``check`` hands
  back (:func:`refuse_fallback`).

Predictions are not graded. ``python -m adapterlib.course grades --course COURSE --out grades.csv`` writes the points
of every exercise from the gradebook, with a status nbgrader does not give: ``ok``, ``untouched`` (every answer cell
still the release's stub) or ``damaged`` (not a notebook, a graded cell deleted or renamed, the kernel died), which
nbgrader exports as 0 just like an untouched one.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = (
    1800  # the training cells of notebooks 3-5 run for minutes on a busy CPU; nbgrader's default is 30
)
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CONFIG = f"""# nbgrader settings for the adapterlib course (written by python -m adapterlib.course build)
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "adapterlib"
# the release keeps each answer cell's stub and drops the solution region, adding nothing in its place
c.ClearSolutions.code_stub = {{"python": ""}}
# notebooks 3-5 train on SST-2 for minutes in one cell; a longer limit per cell than nbgrader's 30 s
c.Execute.timeout = {CELL_TIMEOUT_S}
# nbgrader zip_collect: a laptop's zip is named <student id>_<anything>.zip, e.g. alice_06_comparison.zip
c.FileNameCollectorPlugin.named_regexp = r".*/(?P<student_id>[^/_]+)_[^/]*/(?P<file_id>[^/]+)$"
"""
STRICT = (
    "from adapterlib.course import refuse_fallback\n"
    "from adapterlib.exercises import check, require_correct_answers\n\n"
    "require_correct_answers()  # graded: a wrong or missing answer raises\n"
)


def role(cell: nbformat.NotebookNode) -> tuple[str | None, str | None]:
    """``(role, exercise id)`` from the cell's ``adapterlib`` metadata (``(None, None)`` for other cells)."""
    meta = cell.get("metadata", {}).get("adapterlib", {})
    return meta.get("role"), meta.get("exercise")


def answer_name(check_source: str) -> str:
    """The expression a check cell hands to ``check``: ``X = check("id", X)`` -> ``X``."""
    return check_source.split(", ", 1)[1].rsplit(")", 1)[0].strip()


def refuse_fallback(exercise_id: str, answer: Any) -> None:
    """Raise :class:`~adapterlib.exercises.NotYet` when ``answer`` is, or holds, the reference that an unanswered
    ``check`` hands back so that self-study can go on: a graded cell must not take it for the learner's work."""
    from .exercises import EXERCISES, NotYet

    entry = EXERCISES.get(exercise_id)
    if entry is None or entry.reference is None:
        return
    handed_back = entry.reference()
    references = [
        r for r in (handed_back if isinstance(handed_back, tuple) else (handed_back,)) if r is not None
    ]
    parts = answer if isinstance(answer, tuple) else (answer,)
    if any(part is reference for part in parts for reference in references):
        raise NotYet(f"[{exercise_id}] that is the package's fallback for a missing answer; write your own.")


def solutions_for(notebook: Path) -> dict[str, str]:
    """The worked answer of every exercise, from the notebook's solutions notebook, by exercise id."""
    path = notebook.parent / "solutions" / f"{notebook.stem}_solutions.ipynb"
    if not path.is_file():
        raise FileNotFoundError(f"no solutions notebook {path.name} for {notebook.name} in {path.parent}")
    answers = {}
    for cell in nbformat.read(path, as_version=4).cells:
        kind, exercise_id = role(cell)
        if kind == "answer":
            answers[exercise_id] = cell.source
    return answers


def grade_id(exercise_id: str) -> str:
    """nbgrader's id of an exercise's test cell: ``"1.count"`` -> ``"1-count"`` (nbgrader ids take no dots)."""
    return exercise_id.replace(".", "-", 1)


def exercise_of(cell_id: str) -> str:
    """The exercise id of a test cell's nbgrader id (``"1-count"`` -> ``"1.count"``)."""
    return cell_id.replace("-", ".", 1)


def nbgrader_metadata(cell_id: str, *, solution: bool, points: int | None = None) -> dict:
    graded = points is not None
    meta = {
        "grade": graded,
        "solution": solution,
        "locked": not solution,
        "grade_id": cell_id,
        "schema_version": 3,
    }
    if graded:
        meta["points"] = points
    return meta


def course_notebook(notebook: Path) -> nbformat.NotebookNode:
    """The source version of ``notebook`` for nbgrader: answer cells with solutions, check cells as strict tests."""
    nb = nbformat.read(notebook, as_version=4)
    answers = solutions_for(notebook)
    for cell in nb.cells:
        kind, exercise_id = role(cell)
        if kind == "answer":
            if exercise_id not in answers:
                raise ValueError(
                    f"{notebook.name}: the solutions notebook has no answer cell for {exercise_id}"
                )
            cell.source = f"{cell.source.rstrip()}\n{BEGIN}\n{answers[exercise_id].rstrip()}\n{END}"
            cell.metadata["nbgrader"] = nbgrader_metadata(f"{grade_id(exercise_id)}-answer", solution=True)
        elif kind == "check":
            points = cell.metadata["adapterlib"].get("points", 1)
            cell.source = (
                f"{STRICT}refuse_fallback({exercise_id!r}, {answer_name(cell.source)})\n{cell.source}"
            )
            cell.metadata["nbgrader"] = nbgrader_metadata(
                grade_id(exercise_id), solution=False, points=points
            )
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    return nb


def reads_trained(notebook: Path) -> bool:
    """True for a notebook that loads committed adapters from ``trained/`` beside it (notebooks 3-5)."""
    return any('Path("trained' in cell.source for cell in nbformat.read(notebook, as_version=4).cells)


def build(out: Path, numbers: list[str] | None = None, notebooks: Path = NOTEBOOKS) -> list[str]:
    """Write the course into ``out`` (one assignment per notebook ``NN_*.ipynb``, or only ``numbers``);
    returns the assignment names. Refuses a folder that already holds a course source, to keep a teacher's edits."""
    chosen = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if numbers:
        unknown = set(numbers) - {path.name[:2] for path in chosen}
        if unknown:
            raise ValueError(f"no notebook numbered {', '.join(sorted(unknown))} in {notebooks}")
        chosen = [path for path in chosen if path.name[:2] in numbers]
    chosen = [
        path for path in chosen if any(role(cell)[0] == "check" for cell in nbformat.read(path, 4).cells)
    ]
    if (out / "source").exists():
        raise FileExistsError(f"{out / 'source'} exists: build into a new folder, or delete it first")
    out.mkdir(parents=True, exist_ok=True)
    (out / "nbgrader_config.py").write_text(CONFIG)
    names = []
    for notebook in chosen:
        folder = out / "source" / notebook.stem
        folder.mkdir(parents=True)
        nbformat.write(course_notebook(notebook), folder / notebook.name)
        if reads_trained(notebook):
            shutil.copytree(notebooks / "trained", folder / "trained")
        names.append(notebook.stem)
    return names


# ---------------------------------------------------------------- grades


@dataclass
class Submission:
    student: str
    assignment: str
    notebook: str
    points: dict[str, float]
    status: str
    detail: str = ""


def graded_cells(nb: nbformat.NotebookNode) -> dict[str, str]:
    """``{grade_id: source}`` of the cells nbgrader tracks in a notebook."""
    return {
        cell.metadata["nbgrader"]["grade_id"]: cell.source
        for cell in nb.cells
        if "grade_id" in cell.get("metadata", {}).get("nbgrader", {})
    }


def kernel_died(path: Path) -> bool:
    """True when the autograded notebook records that its kernel died (or it was never written)."""
    if not path.is_file():
        return True
    text = path.read_text()
    return "DeadKernelError" in text or "Kernel died" in text


def status(course: Path, student: str, assignment: str, notebook: str) -> tuple[str, str]:
    """``(status, detail)`` of one submitted notebook, judged against the release."""
    submitted = course / "submitted" / student / assignment / notebook
    try:
        mine = nbformat.read(submitted, as_version=4)
    except FileNotFoundError:
        return "damaged", "notebook missing from the submission"
    except Exception as error:  # nbformat raises several kinds on a file that is not a notebook
        return "damaged", f"not a readable notebook ({type(error).__name__})"
    release = graded_cells(nbformat.read(course / "release" / assignment / notebook, as_version=4))
    theirs = graded_cells(mine)
    missing = [cell_id for cell_id in release if cell_id not in theirs]
    if missing:
        return "damaged", f"graded cells deleted or renamed: {', '.join(exercise_of(i) for i in missing)}"
    if kernel_died(course / "autograded" / student / assignment / notebook):
        return "damaged", "the kernel died while grading (or the notebook was not autograded)"
    answers = [cell_id for cell_id in release if cell_id.endswith("-answer")]
    if all(theirs[cell_id].strip() == release[cell_id].strip() for cell_id in answers):
        return "untouched", ""
    return "ok", ""


def gradebook_points(course: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """``{(student, assignment, notebook): {exercise id: points}}`` from nbgrader's gradebook."""
    query = """
        select student.id, assignment.name, notebook.name, base_cell.name,
               coalesce(grade.manual_score, grade.auto_score, 0)
        from grade
        join base_cell on grade.cell_id = base_cell.id
        join submitted_notebook on grade.notebook_id = submitted_notebook.id
        join notebook on submitted_notebook.notebook_id = notebook.id
        join submitted_assignment on submitted_notebook.assignment_id = submitted_assignment.id
        join assignment on submitted_assignment.assignment_id = assignment.id
        join student on submitted_assignment.student_id = student.id
    """
    connection = sqlite3.connect(course / "gradebook.db")
    try:
        rows = connection.execute(query).fetchall()
    finally:
        connection.close()
    points: dict[tuple[str, str, str], dict[str, float]] = {}
    for student, assignment, notebook, cell, score in rows:
        points.setdefault((student, assignment, f"{notebook}.ipynb"), {})[exercise_of(cell)] = float(score)
    return points


def submissions(course: Path) -> list[Submission]:
    """Every submitted notebook with its points per exercise and its status."""
    points = gradebook_points(course)
    found = []
    for folder in sorted((course / "submitted").glob("*/*")):
        student, assignment = folder.parent.name, folder.name
        for notebook in sorted((course / "release" / assignment).glob("*.ipynb")):
            state, detail = status(course, student, assignment, notebook.name)
            scored = points.get((student, assignment, notebook.name), {})
            found.append(Submission(student, assignment, notebook.name, scored, state, detail))
    return found


def exercise_ids(course: Path, assignment: str) -> list[str]:
    ids = []
    for notebook in sorted((course / "release" / assignment).glob("*.ipynb")):
        ids += [
            exercise_of(i)
            for i in graded_cells(nbformat.read(notebook, as_version=4))
            if not i.endswith("-answer")
        ]
    return ids


def write_grades(course: Path, out: Path) -> list[Submission]:
    """One CSV row per student and notebook: the points of each exercise, the total and the status."""
    rows = submissions(course)
    ids = list(
        dict.fromkeys(
            i for name in sorted({row.assignment for row in rows}) for i in exercise_ids(course, name)
        )
    )
    with out.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "assignment", *ids, "total", "status", "detail"])
        for row in rows:
            mine = exercise_ids(course, row.assignment)
            cells = [(f"{row.points.get(i, 0.0):g}" if i in mine else "") for i in ids]
            writer.writerow(
                [row.student, row.assignment, *cells, f"{sum(row.points.values()):g}", row.status, row.detail]
            )
    return rows


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapterlib.course", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write an nbgrader course from the notebooks")
    make.add_argument("--out", type=Path, required=True, help="the course folder (nbgrader's course root)")
    make.add_argument(
        "--notebooks", nargs="+", metavar="NN", help="only these notebooks, by number (e.g. 01 06)"
    )
    grades = commands.add_parser("grades", help="points per exercise and a status per submission, as CSV")
    grades.add_argument("--course", type=Path, default=Path("."), help="the course folder (default: here)")
    grades.add_argument("--out", type=Path, default=Path("grades_by_exercise.csv"), help="the CSV to write")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            names = build(args.out, args.notebooks)
            print(f"course in {args.out}: {len(names)} assignments ({', '.join(names)})")
            print(f"next: cd {args.out} && nbgrader generate_assignment {names[0]}")
        else:
            if not (args.course / "gradebook.db").is_file():
                raise FileNotFoundError(
                    f"no gradebook.db in {args.course}: run nbgrader autograde there first"
                )
            rows = write_grades(args.course, args.out)
            counts = {
                state: sum(row.status == state for row in rows) for state in ("ok", "untouched", "damaged")
            }
            print(
                f"{args.out}: {len(rows)} submitted notebooks, "
                + ", ".join(f"{n} {s}" for s, n in counts.items())
            )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
