"""Build the class's slides and handout from the notebooks and the plan, without changing either.

Slides: the cells the plan selects (each notebook's title cell, then each shown section) are copied
into one notebook, ``slides.ipynb``, with reveal.js slide metadata set on the copies: a section's
first cell starts a slide, every further cell a sub-slide below it. A generated slide closes each
segment with its in-class exercise and the questions to discuss, and a last one lists the homework.
``jupyter nbconvert --to slides`` turns it into ``slides.slides.html``. That page loads reveal.js,
RequireJS and MathJax from CDNs (nbconvert's template), so it needs a network to render; give
``reveal_prefix`` a local copy of reveal.js 4 to load that one from disk instead.

Handout: ``handout.md`` filled in with parameter counts computed by :mod:`adapterlib.counting` for
the packaged model, the plan's questions and its homework, then rendered to ``handout.html``
(mistune, which nbconvert already needs) and, where Chromium is installed, printed to ``handout.pdf``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mistune
import nbformat
from transformers import AutoConfig

from ..counting import bert_parameter_count, expected_trainable_parameters, head_parameter_count
from ..data import HUB_ROWS
from ..modeling import PACKAGED_MODEL, model_location, peft_config_for
from .plan import HERE, homework, read_notebook, read_plan, section

CHROMIUM = "/usr/bin/chromium"
PAGE_STYLE = """
@page { size: A4; margin: 12mm; }
body { font: 9pt/1.3 sans-serif; max-width: 190mm; margin: auto; }
h1 { font-size: 13pt; margin: 0 0 4pt; }
table { border-collapse: collapse; width: 100%; margin: 4pt 0; }
th, td { border: 1px solid #999; padding: 2pt 3pt; vertical-align: top; }
ul { margin: 2pt 0; padding-left: 14pt; }
p { margin: 4pt 0; }
"""


def slide_copy(cell: nbformat.NotebookNode, slide_type: str, prefix: str) -> nbformat.NotebookNode:
    """A copy of ``cell`` marked as a reveal.js ``slide_type``, its id made unique across notebooks, and
    without the test suite's ``# NBVAL_...`` marker lines, which mean nothing to a class."""
    copy = nbformat.from_dict(cell)
    if cell.cell_type == "code":
        copy.source = "\n".join(line for line in cell.source.split("\n") if not line.startswith("# NBVAL_"))
    copy.metadata["slideshow"] = {"slide_type": slide_type}
    if "id" in copy:
        copy.id = f"{prefix}-{cell.id}"[:64]
    return copy


def closing_slide(segment: dict[str, Any], index: int, exercise_minutes: int) -> nbformat.NotebookNode:
    questions = "\n".join(f"* {question}" for question in segment["discuss"])
    text = f"### In class ({exercise_minutes} minutes): {segment['in_class']}\n\n### Discuss\n\n{questions}"
    cell = nbformat.v4.new_markdown_cell(text, id=f"discuss-{index}")
    cell.metadata["slideshow"] = {"slide_type": "slide"}
    return cell


def deck(plan: dict[str, Any]) -> nbformat.NotebookNode:
    """One notebook holding the plan's slides, in the order of its segments."""
    overview = "\n".join(
        f"{number}. {segment['title']} ({segment['minutes']} min, notebook {segment['notebook'][:2]})"
        for number, segment in enumerate(plan["segments"], start=1)
    )
    cells = [nbformat.v4.new_markdown_cell(f"# {plan['title']}\n\n{overview}", id="plan")]
    cells[0].metadata["slideshow"] = {"slide_type": "slide"}
    first = None
    for index, segment in enumerate(plan["segments"]):
        notebook = read_notebook(segment["notebook"])
        first = first or notebook
        prefix = segment["notebook"][:2]
        cells.append(slide_copy(notebook.cells[0], "slide", prefix))
        for heading in segment["show"]:
            shown = section(notebook, heading)
            cells += [
                slide_copy(cell, "slide" if i == 0 else "subslide", prefix) for i, cell in enumerate(shown)
            ]
        cells.append(closing_slide(segment, index, plan["rates"]["class_exercise_minutes"]))
    at_home = nbformat.v4.new_markdown_cell(
        f"# At home\n\nExercises {', '.join(homework(plan))}; notebooks "
        f"{', '.join(stem[:2].lstrip('0') for stem in plan['homework_notebooks'])}, with their exercises.",
        id="homework",
    )
    at_home.metadata["slideshow"] = {"slide_type": "slide"}
    result = nbformat.v4.new_notebook(cells=cells + [at_home])
    result.metadata = {
        key: first.metadata[key] for key in ("kernelspec", "language_info") if key in first.metadata
    }
    return result


def build_slides(plan: dict[str, Any], out: Path, reveal_prefix: str | None = None) -> Path:
    """Write ``slides.ipynb`` and ``slides.slides.html`` into ``out``; return the HTML's path."""
    notebook = out / "slides.ipynb"
    nbformat.validate(deck_notebook := deck(plan))
    nbformat.write(deck_notebook, notebook)
    command = [sys.executable, "-m", "nbconvert", "--to", "slides", "--output-dir", str(out), str(notebook)]
    if reveal_prefix:
        command.append(f"--SlidesExporter.reveal_url_prefix={reveal_prefix}")
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        raise RuntimeError(f"nbconvert --to slides failed:\n{finished.stderr[-3000:]}")
    return out / "slides.slides.html"


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%"


def handout_values(plan: dict[str, Any]) -> dict[str, Any]:
    """The numbers the handout quotes, computed from the packaged model's config and the plan."""
    config = AutoConfig.from_pretrained(model_location(PACKAGED_MODEL))
    total = bert_parameter_count(config, num_labels=2)
    sizes = {
        "adapter": {"r": 16},
        "parallel": {"r": 16},
        "lora": {"r": 8},
        "dora": {"r": 8},
        "prefix": {"num_virtual_tokens": 10},
    }
    values: dict[str, Any] = {
        "d": config.hidden_size,
        "layers": config.num_hidden_layers,
        "ffn": config.intermediate_size,
        "total": total,
        "head": head_parameter_count(config, 2),
        "adapter_r": 16,
        "lora_r": 8,
        "prefix_n": 10,
        "model_mb": round(total * 4 / 2**20),
    }
    for method in ("adapter", "parallel", "lora", "dora", "prefix", "bitfit", "ia3"):
        count = expected_trainable_parameters(config, peft_config_for(method, sizes.get(method, {})), 2)
        values[method], values[f"{method}_pct"] = count, percent(count, total)
    p, rows = 0.82, HUB_ROWS["validation"]
    values |= {
        "p_example": p,
        "dev_rows": rows,
        "interval": f"{100 * 1.96 * math.sqrt(p * (1 - p) / rows):.1f}",
    }
    values["questions"] = "\n".join(
        f"* *{segment['title']}:* {' '.join(segment['discuss'])}" for segment in plan["segments"]
    )
    values["homework"] = ", ".join(homework(plan))
    return values


def build_handout(plan: dict[str, Any], out: Path, pdf: bool) -> list[Path]:
    """Write ``handout.md`` and ``handout.html`` (and ``handout.pdf`` if asked) into ``out``."""
    text = (HERE / "handout.md").read_text().format(**handout_values(plan))
    (out / "handout.md").write_text(text)
    body = mistune.create_markdown(escape=False, plugins=["table"])(text)
    html = (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Handout</title>"
        f"<style>{PAGE_STYLE}</style></head>\n<body>\n{body}</body></html>\n"
    )
    (out / "handout.html").write_text(html)
    written = [out / "handout.md", out / "handout.html"]
    if pdf:
        written.append(print_pdf(out / "handout.html"))
    return written


def print_pdf(page: Path) -> Path:
    """Print ``page`` to a PDF beside it with headless Chromium (a teacher's tool; students never need it)."""
    chromium = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if chromium is None:
        raise RuntimeError(
            "--pdf needs Chromium (apt-get install chromium); handout.html prints from any browser."
        )
    target = page.with_suffix(".pdf")
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
        f"--print-to-pdf={target}", page.absolute().as_uri(),
    ]  # fmt: skip
    subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return target


def build(out: Path, reveal_prefix: str | None = None, pdf: bool = False) -> list[Path]:
    """Slides and handout for the plan in ``plan.json``, written into ``out`` (created if needed)."""
    plan = read_plan()
    out.mkdir(parents=True, exist_ok=True)
    return [build_slides(plan, out, reveal_prefix), *build_handout(plan, out, pdf)]
