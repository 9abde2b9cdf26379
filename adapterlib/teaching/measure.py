"""Measure the notebooks for the class plan: words of markdown, exercises, predictions, run times.

Each notebook runs as a learner's "Run all" does, from a temporary copy beside the original (so
relative paths resolve the same), under ``/usr/bin/time`` with ``jupyter nbconvert --execute``:
kernel start, imports and every cell. Notebooks 3-5 run twice: as committed (training on SST-2) and
with ``USE_COMMITTED_ADAPTERS = True`` set in the copy (loading ``notebooks/trained/``). The load
average (``/proc/loadavg``) is recorded before and after each run, since a busy machine runs slower.
``$ADAPTERLIB_SST2_DIR`` must name the SST-2 folder. The originals are never changed.
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import nbformat

from .plan import NOTEBOOKS, exercise_ids, predictions, read_notebook, words

SWITCH = "USE_COMMITTED_ADAPTERS = False"
TIME_FORMAT = "%e %U %S %M"  # wall, user and system seconds, peak resident KiB


def notebook_stems() -> list[str]:
    return sorted(path.stem for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def load_average() -> list[float]:
    return [float(value) for value in Path("/proc/loadavg").read_text().split()[:3]]


def with_committed_adapters(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy whose switch cell loads the committed adapters instead of training."""
    copy = nbformat.from_dict(notebook)
    switches = [cell for cell in copy.cells if cell.cell_type == "code" and SWITCH in cell.source]
    if len(switches) != 1:
        raise ValueError(f"expected one cell holding {SWITCH!r}, found {len(switches)}")
    switches[0].source = switches[0].source.replace(SWITCH, "USE_COMMITTED_ADAPTERS = True")
    return copy


def timed_run(notebook: nbformat.NotebookNode, timeout_s: int) -> dict[str, Any]:
    """Execute ``notebook`` from a hidden copy in ``notebooks/``; wall/user/system seconds, peak memory, load.
    A run whose cell passes ``timeout_s`` is recorded as not finished, with the seconds it ran."""
    with tempfile.TemporaryDirectory() as scratch:
        copy = NOTEBOOKS / f".measure-{os.getpid()}.ipynb"
        times = Path(scratch) / "time.txt"
        nbformat.write(notebook, copy)
        command = [
            "/usr/bin/time", "-f", TIME_FORMAT, "-o", str(times),
            sys.executable, "-m", "nbconvert", "--to", "notebook", "--execute",
            f"--ExecutePreprocessor.timeout={timeout_s}", "--output-dir", scratch, str(copy),
        ]  # fmt: skip
        before = load_average()
        try:
            finished = subprocess.run(command, capture_output=True, text=True)
        finally:
            copy.unlink()
        after = load_average()
        if finished.returncode != 0 and "CellTimeoutError" not in finished.stderr:
            raise RuntimeError(f"the notebook failed:\n{finished.stderr[-3000:]}")
        wall, user, system, peak_kib = times.read_text().split()[-4:]
    if finished.returncode != 0:  # a slow machine: record how long it ran before the cell limit stopped it
        return {
            "at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "did_not_finish": f"a cell ran past the {timeout_s} s limit",
            "at_least_s": round(float(wall), 1),
            "load_before": before,
            "load_after": after,
        }
    return {
        "at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wall_s": round(float(wall), 1),
        "user_s": round(float(user), 1),
        "system_s": round(float(system), 1),
        "peak_rss_mib": round(int(peak_kib) / 1024),
        "load_before": before,
        "load_after": after,
    }


def count(stem: str) -> dict[str, Any]:
    notebook = read_notebook(stem)
    return {
        "markdown_words": words(notebook.cells),
        "exercises": exercise_ids(notebook),
        "predictions": predictions(notebook),
    }


def run_times(stem: str, timeout_s: int, kept: dict[str, Any], committed_only: bool) -> dict[str, Any]:
    """The runs of one notebook; with ``committed_only``, the training run is kept from ``kept`` (if any)."""
    notebook = read_notebook(stem)
    has_switch = any(SWITCH in cell.source for cell in notebook.cells if cell.cell_type == "code")
    if not has_switch:
        return {"as_committed": timed_run(notebook, timeout_s)}
    runs = {"training": kept["training"]} if committed_only and "training" in kept else {}
    if not committed_only:
        runs["training"] = timed_run(notebook, timeout_s)
    runs["committed_adapters"] = timed_run(with_committed_adapters(notebook), timeout_s)
    return runs


def machine() -> dict[str, Any]:
    import torch

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "niceness": os.nice(0),
    }


def measure(
    stems: list[str] | None,
    previous: dict[str, Any] | None,
    timeout_s: int,
    runs: bool,
    committed_only: bool = False,
) -> dict[str, Any]:
    """Counts for every notebook; run times for ``stems`` when ``runs``, else kept from ``previous``."""
    if runs and not os.environ.get("ADAPTERLIB_SST2_DIR"):
        raise SystemExit("measure: set ADAPTERLIB_SST2_DIR to the SST-2 folder (an absolute path) first.")
    previous = previous or {"notebooks": {}}
    result = {"machine": machine() if runs else previous.get("machine"), "notebooks": {}}
    for stem in notebook_stems():
        entry = count(stem)
        if runs and (stems is None or stem in stems):
            print(f"running {stem} ...", file=sys.stderr, flush=True)
            kept = previous["notebooks"].get(stem, {}).get("runs", {})
            entry["runs"] = run_times(stem, timeout_s, kept, committed_only)
        elif "runs" in previous["notebooks"].get(stem, {}):
            entry["runs"] = previous["notebooks"][stem]["runs"]
        result["notebooks"][stem] = entry
    return result
