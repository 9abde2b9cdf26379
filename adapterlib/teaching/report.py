"""The tables TEACHING.md quotes, rendered from ``measurements.json`` and ``plan.json``.

TEACHING.md holds each table between ``<!-- teaching:NAME -->`` and ``<!-- /teaching:NAME -->``;
``python -m adapterlib.teaching tables --write`` puts the current ones there, and the test suite
fails when the file and the measurements disagree.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .plan import ROOT, exercise_ids, fits, homework, predictions, read_notebook, shown_cells, words

TEACHING = ROOT / "TEACHING.md"


def seconds(run: dict[str, Any]) -> str:
    if "did_not_finish" in run:
        return f"more than {run['at_least_s']:.0f} s (did not finish: {run['did_not_finish']})"
    return f"{run['wall_s']:.0f} s"


def load(run: dict[str, Any]) -> str:
    after = f"{run['load_after'][0]:.1f}" if run.get("load_after") else "not recorded"
    return f"{run['load_before'][0]:.1f} → {after}"


def run_times(entry: dict[str, Any]) -> tuple[str, str, str]:
    """(run as committed, run with committed adapters, load averages) for one notebook's table row."""
    runs = entry["runs"]
    if "training" in runs:
        trained, loaded = runs["training"], runs["committed_adapters"]
        return f"{seconds(trained)} (training)", seconds(loaded), f"{load(trained)}; {load(loaded)}"
    return seconds(runs["as_committed"]), "", load(runs["as_committed"])


def measured_table(plan: dict[str, Any], measurements: dict[str, Any]) -> str:
    rate, machine = plan["rates"]["reading_words_per_minute"], measurements["machine"]
    times = sorted(
        run["at"] for entry in measurements["notebooks"].values() for run in entry["runs"].values()
    )
    lines = [
        f"Measured on {machine['cpu']} ({machine['cpus']} cores, torch {machine['torch']} with "
        f"{machine['torch_threads']} threads, niceness {machine['niceness']}) from {times[0]} to {times[-1]}, "
        "on a machine shared with other work: the load averages are in the last column.",
        "",
        f"| notebook | words of markdown | reading at {rate} words/min | graded exercises | predictions "
        "| run time | with committed adapters | 1-min load average before → after |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for stem, entry in measurements["notebooks"].items():
        count = entry["markdown_words"]
        ran, loaded, loads = run_times(entry)
        lines.append(
            f"| {stem} | {count:,} | {count / rate:.0f} min | {len(entry['exercises'])} "
            f"| {entry['predictions']} | {ran} | {loaded} | {loads} |"
        )
    class_notebooks = {segment["notebook"] for segment in plan["segments"]}
    every = set(measurements["notebooks"])
    for label, chosen in (("notebooks 1-7", class_notebooks), (f"all {len(every)} notebooks", every)):
        entries = [entry for stem, entry in measurements["notebooks"].items() if stem in chosen]
        count = sum(entry["markdown_words"] for entry in entries)
        exercises = sum(len(entry["exercises"]) for entry in entries)
        predicted = sum(entry["predictions"] for entry in entries)
        lines.append(f"| {label} | {count:,} | {count / rate:.0f} min | {exercises} | {predicted} | | | |")
    return "\n".join(lines)


def plan_table(plan: dict[str, Any], measurements: dict[str, Any]) -> str:
    lines = [
        "| minutes | segment | slides: notebook, sections | in class | needs (min) | Run all, measured (min) "
        "| to discuss |",
        "| --- | --- | --- | --- | ---: | --- | --- |",
    ]
    start = 0
    for segment, fit in zip(plan["segments"], fits(plan, measurements), strict=True):
        end = start + segment["minutes"]
        sections = "; ".join(segment["show"])
        lines.append(
            f"| {start}-{end} | {segment['title']} | {segment['notebook'][:2]}: {sections} | {segment['in_class']} "
            f"| {fit.needed:.1f} | {fit.running:.1f}{'' if fit.runs_in_time else ': longer than the slides'} "
            f"| {' '.join(segment['discuss'])} |"
        )
        start = end
    return "\n".join(lines)


def homework_table(plan: dict[str, Any]) -> str:
    """Minutes of work left per notebook: the exercises not done in class, the predictions, the
    words not shown on the slides, at the plan's rates."""
    rates = plan["rates"]
    left = set(homework(plan))
    shown_words = {
        segment["notebook"]: words(shown_cells(read_notebook(segment["notebook"]), segment))
        for segment in plan["segments"]
    }
    lines = [
        f"| notebook | exercises at home ({rates['homework_exercise_minutes']} min each) "
        f"| predictions ({rates['prediction_minutes']} min each) "
        f"| words not on the slides ({rates['reading_words_per_minute']}/min) | minutes |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    total = 0.0
    stems = [segment["notebook"] for segment in plan["segments"]] + plan["homework_notebooks"]
    for stem in stems:
        notebook = read_notebook(stem)
        exercises = [
            found for found in exercise_ids(notebook) if found in left or stem in plan["homework_notebooks"]
        ]
        unread = words(notebook.cells) - shown_words.get(stem, 0)
        minutes = (
            len(exercises) * rates["homework_exercise_minutes"]
            + predictions(notebook) * rates["prediction_minutes"]
            + unread / rates["reading_words_per_minute"]
        )
        total += minutes
        lines.append(
            f"| {stem} | {', '.join(exercises) or '-'} | {predictions(notebook)} | {unread:,} | {minutes:.0f} |"
        )
    lines.append(f"| all | | | | {total:.0f} |")
    return "\n".join(lines)


def tables(plan: dict[str, Any], measurements: dict[str, Any]) -> dict[str, str]:
    return {
        "measured": measured_table(plan, measurements),
        "plan": plan_table(plan, measurements),
        "homework": homework_table(plan),
    }


def block(name: str) -> re.Pattern:
    return re.compile(rf"<!-- teaching:{name} -->\n(.*?)\n?<!-- /teaching:{name} -->", re.DOTALL)


def quoted_tables(text: str, names: list[str]) -> dict[str, str]:
    """The tables a TEACHING.md text holds between its markers; a KeyError for a missing marker."""
    found = {}
    for name in names:
        match = block(name).search(text)
        if match is None:
            raise KeyError(f"TEACHING.md has no <!-- teaching:{name} --> block")
        found[name] = match.group(1)
    return found


def write_tables(current: dict[str, str], path: Path = TEACHING) -> None:
    text = path.read_text()
    for name, table in current.items():
        quoted_tables(text, [name])
        quoted = f"<!-- teaching:{name} -->\n{table}\n<!-- /teaching:{name} -->"
        text = block(name).sub(lambda _, quoted=quoted: quoted, text)
    path.write_text(text)


def readme_time(entry: dict[str, Any]) -> str:
    """The run time README's notebook table gives for one notebook."""
    runs = entry["runs"]
    if "training" in runs:
        return f"{seconds(runs['training'])} training; {seconds(runs['committed_adapters'])} with committed adapters"
    return seconds(runs["as_committed"])


def write_readme_times(measurements: dict[str, Any], path: Path = ROOT / "README.md") -> None:
    """Put each notebook's measured run time into the last column of README's notebook table."""
    lines = path.read_text().split("\n")
    for stem, entry in measurements["notebooks"].items():
        row = next(i for i, line in enumerate(lines) if line.startswith(f"| [`{stem}.ipynb`]"))
        cells = lines[row].rstrip().removesuffix("|").rsplit("|", 1)[0]
        lines[row] = f"{cells}| {readme_time(entry)} |"
    path.write_text("\n".join(lines))
