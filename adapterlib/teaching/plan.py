"""The class plan (``plan.json``) and what it selects from the notebooks, read without changing them.

A segment of the plan names a notebook, its minutes, the ``##`` sections shown on the slides (by
heading text, so that cell ids and positions may change), one exercise done in class and the
questions to discuss. A section is the cell holding its ``## heading`` and every cell after it up to
the next ``#`` or ``##`` heading. Everything else in notebooks 1-7, and the plan's homework notebooks
(8-10), is homework.

Whether a segment fits is computed, not asserted: its minutes must cover

    needed = shown words / speaking rate + in-class exercise + discussion,

at the rates stated in ``plan.json``. The learners start "Run all" (with committed adapters) as the
segment begins, and the teacher presents the slides (built from the committed outputs) meanwhile, so
the run is in time when its measured run time (``measurements.json``) is at most the speaking time.
Run times depend on the machine and its load; the words do not, which is why only ``needed`` decides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from ..exercises import EXERCISES

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
HERE = Path(__file__).resolve().parent
PLAN_FILE = HERE / "plan.json"
MEASUREMENTS_FILE = HERE / "measurements.json"
SECTION_HEADING = re.compile(r"^(#{1,2}) (.+?)\s*$", re.MULTILINE)
PREDICTION_HEADING = re.compile(r"^#{2,3} Predict", re.MULTILINE)
EXERCISE_CALL = re.compile(r'check\("([^"]+)"')


def read_plan(path: Path = PLAN_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())


def read_measurements(path: Path = MEASUREMENTS_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())


def notebook_path(stem: str) -> Path:
    return NOTEBOOKS / f"{stem}.ipynb"


def read_notebook(stem: str) -> nbformat.NotebookNode:
    return nbformat.read(notebook_path(stem), as_version=4)


def words(cells: list[nbformat.NotebookNode]) -> int:
    """Words of markdown: whitespace-separated tokens, formulas and code spans included."""
    return sum(len(cell.source.split()) for cell in cells if cell.cell_type == "markdown")


def section_heading(cell: nbformat.NotebookNode) -> str | None:
    """The first ``#`` or ``##`` heading of a markdown cell, without its hashes."""
    if cell.cell_type != "markdown":
        return None
    found = SECTION_HEADING.search(cell.source)
    return found.group(2) if found else None


def section(notebook: nbformat.NotebookNode, heading: str) -> list[nbformat.NotebookNode]:
    """The cells of the ``##`` section titled ``heading``; a KeyError naming the notebook's sections if none is."""
    cells = notebook.cells
    title = re.compile(rf"^## {re.escape(heading)}\s*$", re.MULTILINE)
    starts = [i for i, cell in enumerate(cells) if cell.cell_type == "markdown" and title.search(cell.source)]
    if len(starts) != 1:
        known = [h for cell in cells if (h := section_heading(cell))]
        raise KeyError(f"section {heading!r}: found {len(starts)} times; the notebook's sections are {known}")
    end = next((i for i in range(starts[0] + 1, len(cells)) if section_heading(cells[i])), len(cells))
    return cells[starts[0] : end]


def shown_cells(notebook: nbformat.NotebookNode, segment: dict[str, Any]) -> list[nbformat.NotebookNode]:
    """What a segment's slides show: the notebook's title cell, then each section it names."""
    return [notebook.cells[0]] + [cell for heading in segment["show"] for cell in section(notebook, heading)]


def exercise_ids(notebook: nbformat.NotebookNode) -> list[str]:
    """The ids of the exercises the notebook hands to ``check``, in order."""
    return [
        found
        for cell in notebook.cells
        if cell.cell_type == "code"
        for found in EXERCISE_CALL.findall(cell.source)
    ]


def predictions(notebook: nbformat.NotebookNode) -> int:
    """Markdown headings that start a "Predict, then run" cell."""
    return sum(len(PREDICTION_HEADING.findall(c.source)) for c in notebook.cells if c.cell_type == "markdown")


@dataclass(frozen=True)
class Fit:
    """One segment's budget against what it needs, in minutes."""

    notebook: str
    minutes: int
    shown_words: int
    speaking: float
    exercise: float
    discussion: float
    running: float

    @property
    def needed(self) -> float:
        return self.speaking + self.exercise + self.discussion

    @property
    def runs_in_time(self) -> bool:
        """Whether "Run all" finishes while the slides are presented, by the measured run time."""
        return self.running <= self.speaking

    @property
    def fits(self) -> bool:
        return self.needed <= self.minutes


def class_run_seconds(measurements: dict[str, Any], stem: str) -> float:
    """The run time a class waits for: with committed adapters where the notebook trains."""
    runs = measurements["notebooks"][stem]["runs"]
    return runs.get("committed_adapters", runs.get("as_committed"))["wall_s"]


def fits(plan: dict[str, Any], measurements: dict[str, Any]) -> list[Fit]:
    rates = plan["rates"]
    result = []
    for segment in plan["segments"]:
        shown = shown_cells(read_notebook(segment["notebook"]), segment)
        result.append(
            Fit(
                notebook=segment["notebook"],
                minutes=segment["minutes"],
                shown_words=words(shown),
                speaking=words(shown) / rates["speaking_words_per_minute"],
                exercise=rates["class_exercise_minutes"],
                discussion=rates["discussion_minutes"],
                running=class_run_seconds(measurements, segment["notebook"]) / 60,
            )
        )
    return result


def homework(plan: dict[str, Any]) -> list[str]:
    """The exercises of the class's notebooks not done in class (the homework notebooks come on top)."""
    in_class = {segment["in_class"] for segment in plan["segments"]}
    stems = [segment["notebook"] for segment in plan["segments"]]
    return [found for stem in stems for found in exercise_ids(read_notebook(stem)) if found not in in_class]


def check_plan(plan: dict[str, Any]) -> None:
    """A ValueError naming the first inconsistency: minutes that do not add up, an unknown exercise id,
    or an in-class exercise that is not in its segment's notebook."""
    total = sum(segment["minutes"] for segment in plan["segments"])
    if total != plan["minutes"]:
        raise ValueError(f"the segments add up to {total} minutes, not the plan's {plan['minutes']}")
    for segment in plan["segments"]:
        chosen = segment["in_class"]
        if re.fullmatch(r"\d\.\w+", chosen):
            if chosen not in EXERCISES:
                raise ValueError(f"{segment['notebook']}: exercise {chosen!r} is not registered")
            if chosen not in exercise_ids(read_notebook(segment["notebook"])):
                raise ValueError(f"{segment['notebook']}: exercise {chosen!r} is not in this notebook")
