"""The notebooks as an nbgrader course: build it, and read its grades with a status per submission.

``python -m adapterlib.course build --out COURSE`` writes an nbgrader course folder, one assignment per notebook::

    COURSE/nbgrader_config.py                       cell timeout, an empty solution stub
    COURSE/source/01_bottleneck_math/01_bottleneck_math.ipynb
    COURSE/source/03_sst2_adapters/trained/...      the committed adapters a notebook loads

Every notebook must have graded exercises (a notebook without is refused, not left out). Each assignment starts with
a note on how this copy is graded (:data:`GRADING_NOTE`), and notebooks 3-5 have ``USE_COMMITTED_ADAPTERS = True``
so that they load ``trained/`` instead of training for half an hour per learner. Each exercise is two cells in the
notebooks (their ``adapterlib`` cell metadata says which; an answer cell that ends with its own check line, with the
points in its metadata, is split in two):

* the learner's **answer** cell becomes an nbgrader solution cell. Its source version is the learner's stub followed by
  the worked answer from ``notebooks/solutions/`` between ``### BEGIN SOLUTION`` and ``### END SOLUTION``; the
  release replaces that region with nothing, so learners get exactly the stub of the self-study notebooks;
* the **check** cell, ``X = check("id", X)``, becomes a locked autograded test cell worth the exercise's points. It
  switches the checker to strict mode first (:func:`~adapterlib.exercises.require_correct_answers`), so a wrong or
  missing answer raises and scores 0; it imports ``check`` afresh, so an answer that rebinds ``check`` or turns
  strict mode off earlier gains nothing, and it refuses the package's fallback that an unanswered ``check`` hands
  back (:func:`refuse_fallback`).

Predictions are not graded. ``python -m adapterlib.course grades --course COURSE --out grades.csv`` writes the points
of every exercise from the gradebook for every student and every assignment someone handed in, with a status
nbgrader does not give: ``ok``, ``untouched`` (every answer cell still the release's stub), ``missing`` (nothing
handed in) or ``damaged`` (not a notebook, the notebook missing, a graded cell deleted or renamed, the kernel died),
which nbgrader exports as 0 just like an untouched one; and a review column naming the cells that reach into the
grader or the interpreter (:func:`review`), the submissions to read by hand.
"""

from __future__ import annotations

import argparse
import copy
import csv
import re
import shutil
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 1800  # some cells run for minutes on a busy CPU; nbgrader's default is 30
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
# notebooks 3-5 train for minutes per learner unless told to load notebooks/trained/: the course loads
COMMITTED_ADAPTERS_OFF, COMMITTED_ADAPTERS_ON = (
    "USE_COMMITTED_ADAPTERS = False",
    "USE_COMMITTED_ADAPTERS = True",
)
ZIP_REGEXP = (
    r".*/downloaded/[^/]+/extracted/(?P<student_id>[^/_]+)_[^/]*/(?:[^/._][^/]*/)*(?P<file_id>[^/._][^/]*)$"
)
CONFIG = f"""# nbgrader settings for the adapterlib course (written by python -m adapterlib.course build)
c = get_config()  # noqa: F821 (nbgrader provides it)
c.CourseDirectory.course_id = "adapterlib"
# the release keeps each answer cell's stub and drops the solution region, adding nothing in its place
c.ClearSolutions.code_stub = {{"python": ""}}
# some cells run for minutes on a busy CPU: a longer limit per cell than nbgrader's 30 s
c.Execute.timeout = {CELL_TIMEOUT_S}
# nbgrader zip_collect: a laptop's zip is named <student id>_<anything>.zip (the id has no underscore), e.g.
# alice_06_comparison.zip; the notebook inside keeps its release name, at the top or in folders ("Compress folder");
# hidden files and folders and macOS's __MACOSX/ copies are skipped
c.FileNameCollectorPlugin.named_regexp = {ZIP_REGEXP!r}
"""
GRADING_NOTE = """**How this copy is graded.** Each exercise is worth the points its check cell states (1 or 2); the
test cells run the checker in strict mode. Here a wrong or missing answer does not hand back the package's version,
as the text below says of self-study: its check cell raises and scores 0, and the cells after it that use the answer
may then fail too. Save the notebook under its own file name and hand it in with every cell in place."""
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


def split_answer_and_check(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """An answer cell that ends with its own ``X = check("id", X)`` line (its metadata then carries the points)
    as two cells, answer and check, the shape the course needs; any other cell as it is."""
    kind, exercise_id = role(cell)
    lines = cell.source.rstrip().splitlines()
    if kind != "answer" or not lines or f'check("{exercise_id}", ' not in lines[-1]:
        return [cell]
    points = cell.metadata["adapterlib"].get("points", 1)
    answer = nbformat.v4.new_code_cell("\n".join(lines[:-1]).rstrip(), metadata=copy.deepcopy(cell.metadata))
    answer.metadata["adapterlib"] = {"exercise": exercise_id, "role": "answer"}
    check = nbformat.v4.new_code_cell(lines[-1], id=f"{grade_id(exercise_id)}-check")
    check.metadata["adapterlib"] = {"exercise": exercise_id, "points": points, "role": "check"}
    return [answer, check]


def exercise_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The notebook's cells with every answer that holds its own check split in two."""
    return [part for cell in nb.cells for part in split_answer_and_check(cell)]


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
    for cell in exercise_cells(nbformat.read(path, as_version=4)):
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
    nb.cells = [nbformat.v4.new_markdown_cell(GRADING_NOTE, id="grading-note"), *exercise_cells(nb)]
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
        if cell.cell_type == "code" and COMMITTED_ADAPTERS_OFF in cell.source:
            cell.source = cell.source.replace(COMMITTED_ADAPTERS_OFF, COMMITTED_ADAPTERS_ON)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
            cell.metadata.pop("execution", None)
    return nb


def reads_trained(notebook: Path) -> bool:
    """True for a notebook that loads committed adapters from ``trained/`` beside it (notebooks 3-5)."""
    return any('Path("trained' in cell.source for cell in nbformat.read(notebook, as_version=4).cells)


def is_graded(notebook: Path) -> bool:
    """True when the notebook has a check cell marked by its ``adapterlib`` metadata."""
    return any(role(cell)[0] == "check" for cell in exercise_cells(nbformat.read(notebook, as_version=4)))


def build(out: Path, numbers: list[str] | None = None, notebooks: Path = NOTEBOOKS) -> list[str]:
    """Write the course into ``out`` (one assignment per notebook ``NN_*.ipynb``, or only ``numbers``);
    returns the assignment names. Refuses a folder that already holds a course source, to keep a teacher's edits."""
    chosen = sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))
    if numbers:
        unknown = set(numbers) - {path.name[:2] for path in chosen}
        if unknown:
            raise ValueError(f"no notebook numbered {', '.join(sorted(unknown))} in {notebooks}")
        chosen = [path for path in chosen if path.name[:2] in numbers]
    if not chosen:
        raise ValueError(f"no notebooks NN_*.ipynb in {notebooks}")
    ungraded = [path.name for path in chosen if not is_graded(path)]
    if ungraded:
        raise ValueError(
            f"{', '.join(ungraded)}: no graded exercise (no check cell with adapterlib metadata role, exercise"
            " and points); mark its check cells, or leave it out with --notebooks"
        )
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
    review: str = ""


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


# code an answer has no reason to hold: it reaches into the grader or the interpreter, or swaps a library's function
MODULES = r"(?:adapterlib|builtins|sys|torch|peft|transformers|numpy|np|math|inspect)"
SUSPICIOUS = {
    "the grader (adapterlib.exercises)": r"adapterlib\.exercises|\bimport\s+(?:\w+\s*,\s*)*exercises\b",
    "the course module": r"adapterlib\.course|\bimport\s+(?:\w+\s*,\s*)*course\b|\brefuse_fallback\b",
    "strict mode": r"\brequire_correct_answers\b",
    "check replaced": r"\bcheck\s*=(?!=)|\bdef\s+check\b|\bdel\s+check\b",
    "a profile or trace hook": r"\bset(?:profile|trace)\b|\bsys\.monitoring\b",
    "a module's attribute set": rf"\b(?:set|del)attr\s*\(\s*{MODULES}\b|\b{MODULES}(?:\.\w+)+\s*=(?!=)",
    "builtins": r"\b__builtins__\b|\bbuiltins\b",
    "the module table or importer": r"\bsys\.modules\b|\bimportlib\b|\b__import__\b",
    "the interpreter's internals": r"\bglobals\s*\(\)|\b__dict__\b|\b(?:gc|ctypes)\.|\bimport\s+(?:gc|ctypes)\b",
    "exec or eval": r"(?<![.\w])(?:exec|eval|compile)\s*\(",
}


def review(course: Path, student: str, assignment: str, notebook: str) -> str:
    """The code cells of a submission that reach into the grader or the interpreter, as
    ``"1.count: check replaced; cell 7: setattr"``: nbgrader runs the test cells in the learner's kernel, so such a
    cell can make a check pass. An answer cell or a cell the release lacks is read whole; a release cell the learner
    edited (the setup cell, a locked test cell) only in the lines the release does not have. Read them by hand."""
    try:
        mine = nbformat.read(course / "submitted" / student / assignment / notebook, as_version=4)
        release = nbformat.read(course / "release" / assignment / notebook, as_version=4)
    except Exception:  # a missing or damaged notebook: status says so
        return ""
    released = {cell.get("id"): cell.source for cell in release.cells if cell.cell_type == "code"}
    found = []
    for number, cell in enumerate(mine.cells, start=1):
        if cell.cell_type != "code":
            continue
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id", "")
        code = cell.source
        if grade_id.endswith("-answer"):
            where = exercise_of(grade_id.removesuffix("-answer"))
        else:
            where = f"test cell {exercise_of(grade_id)}" if grade_id else f"cell {number}"
            if cell.get("id") in released:
                given = {line.strip() for line in released[cell.get("id")].splitlines()}
                code = "\n".join(line for line in code.splitlines() if line.strip() not in given)
        reasons = [name for name, pattern in SUSPICIOUS.items() if re.search(pattern, code)]
        if reasons:
            found.append(f"{where}: {', '.join(reasons)}")
    return "; ".join(found)


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


def gradebook_students(course: Path) -> list[str]:
    """The ids of every student in nbgrader's gradebook (added by ``nbgrader db student add`` or by autograde)."""
    connection = sqlite3.connect(course / "gradebook.db")
    try:
        return [row[0] for row in connection.execute("select id from student")]
    finally:
        connection.close()


def submissions(course: Path) -> list[Submission]:
    """Every student of the gradebook or of ``submitted/``, for every assignment someone handed in: the points
    per exercise, the status and the review signal of each notebook (``missing`` where nothing was handed in)."""
    points = gradebook_points(course)
    handed_in = {(folder.parent.name, folder.name) for folder in (course / "submitted").glob("*/*")}
    students = sorted(set(gradebook_students(course)) | {student for student, _ in handed_in})
    assignments = sorted({assignment for _, assignment in handed_in})
    found = []
    for student in students:
        for assignment in assignments:
            for notebook in sorted((course / "release" / assignment).glob("*.ipynb")):
                if (student, assignment) not in handed_in:
                    found.append(Submission(student, assignment, notebook.name, {}, "missing"))
                    continue
                state, detail = status(course, student, assignment, notebook.name)
                scored = points.get((student, assignment, notebook.name), {})
                flagged = review(course, student, assignment, notebook.name)
                found.append(Submission(student, assignment, notebook.name, scored, state, detail, flagged))
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
    """One CSV row per student and notebook: the points of each exercise, the total, the status and the review."""
    rows = submissions(course)
    ids = list(
        dict.fromkeys(
            i for name in sorted({row.assignment for row in rows}) for i in exercise_ids(course, name)
        )
    )
    with out.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "assignment", *ids, "total", "status", "detail", "review"])
        for row in rows:
            mine = exercise_ids(course, row.assignment)
            cells = [(f"{row.points.get(i, 0.0):g}" if i in mine else "") for i in ids]
            writer.writerow(
                [
                    row.student,
                    row.assignment,
                    *cells,
                    f"{sum(row.points.values()):g}",
                    row.status,
                    row.detail,
                    row.review,
                ]
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
            states = ("ok", "untouched", "damaged", "missing")
            counts = {state: sum(row.status == state for row in rows) for state in states}
            flagged = sum(bool(row.review) for row in rows)
            print(
                f"{args.out}: {len(rows)} notebooks, "
                + ", ".join(f"{n} {s}" for s, n in counts.items())
                + f"; {flagged} to read by hand (review column)"
            )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
