"""The teacher's kit: the plan fits by its measurements, the guides quote them, the build works.

The measurements themselves (``adapterlib/teaching/measurements.json``) are made by
``python -m adapterlib.teaching measure``, minutes of notebook runs; here only what can drift
is checked: the word and exercise counts against today's notebooks, and every table and time in
TEACHING.md and README.md against the file.
"""

import hashlib
import re
from pathlib import Path

import nbformat
import pytest

from adapterlib.counting import expected_trainable_parameters
from adapterlib.exercises import EXERCISES
from adapterlib.teaching.build import build_handout, build_slides, handout_values, print_pdf
from adapterlib.teaching.measure import SWITCH, count, notebook_stems, with_committed_adapters
from adapterlib.teaching.plan import (
    NOTEBOOKS,
    check_plan,
    exercise_ids,
    fits,
    homework,
    read_measurements,
    read_notebook,
    read_plan,
    section,
)
from adapterlib.teaching.report import TEACHING, quoted_tables, readme_time, tables

ROOT = Path(__file__).resolve().parents[1]
PLAN, MEASUREMENTS = read_plan(), read_measurements()


def test_the_plan_is_consistent():
    check_plan(PLAN)
    assert sum(segment["minutes"] for segment in PLAN["segments"]) == 90


def test_every_segment_fits_its_minutes_by_the_measurements():
    late = [
        (fit.notebook, fit.minutes, round(fit.needed, 1)) for fit in fits(PLAN, MEASUREMENTS) if not fit.fits
    ]
    assert not late, f"segments that need more than their minutes: {late}"


def test_one_exercise_in_class_per_notebook_and_every_other_one_at_home():
    class_notebooks = [segment["notebook"] for segment in PLAN["segments"]]
    in_class = [segment["in_class"] for segment in PLAN["segments"]]
    at_home = homework(PLAN)
    in_notebooks = [found for stem in class_notebooks for found in exercise_ids(read_notebook(stem))]
    registered = [exercise_id for exercise_id in EXERCISES if exercise_id.split(".")[0] in set("1234567")]
    graded_in_class = [found for found in in_class if found in EXERCISES]
    assert len(graded_in_class) == 6 and not set(graded_in_class) & set(at_home)
    assert sorted(graded_in_class + at_home) == sorted(in_notebooks) == sorted(registered)


def test_a_missing_section_is_named():
    with pytest.raises(KeyError, match="the notebook's sections are"):
        section(read_notebook("01_bottleneck_math"), "A section that is not there")


def test_the_measurements_match_todays_notebooks():
    assert list(MEASUREMENTS["notebooks"]) == notebook_stems()
    for stem, entry in MEASUREMENTS["notebooks"].items():
        assert {key: entry[key] for key in ("markdown_words", "exercises", "predictions")} == count(stem), (
            f"{stem} changed since it was measured: python -m adapterlib.teaching measure --words-only"
        )
        runs = entry["runs"]
        trains = any(SWITCH in cell.source for cell in read_notebook(stem).cells)
        assert set(runs) == ({"training", "committed_adapters"} if trains else {"as_committed"})
        for name, run in runs.items():
            assert len(run["load_before"]) == 3
            if "did_not_finish" in run:  # only a training run may have stopped at the cell time limit
                assert name == "training" and run["at_least_s"] > 0
            else:
                assert run["wall_s"] > 0 and len(run["load_after"]) == 3


def test_teaching_md_quotes_the_current_tables():
    current = tables(PLAN, MEASUREMENTS)
    text = TEACHING.read_text()
    assert quoted_tables(text, list(current)) == current, "run: python -m adapterlib.teaching tables --write"
    outside = re.sub(r"<!-- teaching:(\w+) -->.*?<!-- /teaching:\1 -->", "", text, flags=re.DOTALL)
    assert not re.search(r"\b\d+(\.\d+)? ?(s|seconds?)\b", outside), "run times belong in the measured table"


def test_readme_quotes_the_measured_run_times():
    readme = (ROOT / "README.md").read_text()
    for stem, entry in MEASUREMENTS["notebooks"].items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| [`{stem}.ipynb`]"))
        assert row.rstrip(" |").endswith(readme_time(entry)), f"README's row for {stem}: {row[-80:]}"
    assert "TEACHING.md" in readme.split("### For teachers", 1)[1].split("\n## ", 1)[0]


def test_the_switch_is_set_on_a_copy_only():
    original = read_notebook("03_sst2_adapters")
    copy = with_committed_adapters(original)
    code = [cell.source for cell in copy.cells if cell.cell_type == "code"]
    assert sum("USE_COMMITTED_ADAPTERS = True" in source for source in code) == 1
    assert not any(SWITCH in source for source in code)
    assert sum(SWITCH in cell.source for cell in original.cells if cell.cell_type == "code") == 1
    with pytest.raises(ValueError, match="expected one cell"):
        with_committed_adapters(read_notebook("01_bottleneck_math"))


def fingerprints() -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in NOTEBOOKS.glob("*.ipynb")}


def test_the_build_writes_slides_and_a_handout_and_leaves_the_notebooks(tmp_path):
    before = fingerprints()
    slides = build_slides(PLAN, tmp_path)
    written = build_handout(PLAN, tmp_path, pdf=False)
    assert fingerprints() == before

    deck = nbformat.read(tmp_path / "slides.ipynb", as_version=4)
    for segment in PLAN["segments"]:
        notebook = read_notebook(segment["notebook"])
        shown = [cell for heading in segment["show"] for cell in section(notebook, heading)]
        markdown = {cell.source for cell in shown if cell.cell_type == "markdown"}
        outputs = [cell.outputs for cell in shown if cell.cell_type == "code"]
        assert markdown <= {cell.source for cell in deck.cells}, segment["notebook"]
        assert all(any(cell.get("outputs") == out for cell in deck.cells) for out in outputs), segment[
            "notebook"
        ]
    assert not any("# NBVAL_" in cell.source for cell in deck.cells if cell.cell_type == "code")
    assert all(cell.metadata["slideshow"]["slide_type"] in ("slide", "subslide") for cell in deck.cells)
    page = slides.read_text()
    assert page.count("<section") >= len(deck.cells)
    assert "reveal.js" in page and all(question in page for question in PLAN["segments"][3]["discuss"])

    handout = (tmp_path / "handout.html").read_text()
    assert [path.name for path in written] == ["handout.md", "handout.html"]
    assert "{" not in (tmp_path / "handout.md").read_text(), "a placeholder was left unfilled"
    assert f"{handout_values(PLAN)['lora']:,}" in handout and "<table>" in handout
    assert all(exercise_id in handout for exercise_id in homework(PLAN))


def test_the_handout_counts_come_from_the_package():
    from transformers import AutoConfig

    from adapterlib.modeling import PACKAGED_MODEL, model_location, peft_config_for

    values = handout_values(PLAN)
    config = AutoConfig.from_pretrained(model_location(PACKAGED_MODEL))
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    head = 2 * d + 2
    assert values["adapter"] == values["parallel"] == layers * (2 * d * 16 + d + 16) + head
    assert values["lora"] == layers * 2 * 8 * (d + d) + head
    assert values["prefix"] == layers * 2 * 10 * d + head
    assert values["bitfit"] == layers * (7 * d + ffn) + head
    assert values["ia3"] == expected_trainable_parameters(config, peft_config_for("ia3", {}), 2)


@pytest.mark.skipif(
    not Path("/usr/bin/chromium").exists(), reason="the PDF is printed by Chromium, a teacher's option"
)
def test_the_handout_prints_on_one_page(tmp_path):
    build_handout(PLAN, tmp_path, pdf=False)
    pdf = print_pdf(tmp_path / "handout.html").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 1


def test_a_run_longer_than_the_slides_is_flagged_but_only_the_words_decide_the_fit():
    from adapterlib.teaching.plan import Fit

    slow = Fit("x", minutes=10, shown_words=300, speaking=2.0, exercise=5, discussion=2, running=3.0)
    assert slow.fits and not slow.runs_in_time
    assert not Fit("x", 8, 300, 2.0, 5, 2, 1.0).fits
