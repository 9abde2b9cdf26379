"""The comparison summary: grouping by variant, spread, intervals, and the written files; the charts
readable on a projector (no label over another or over an error bar, 14 pt type, legends outside)."""

import json
import math
from pathlib import Path

import matplotlib

from adapterlib.compare import (
    counted,
    learning_rate_curves,
    markdown_table,
    plot_comparison,
    plot_learning_rates,
    run_grid,
    summarize,
    write_results,
)
from adapterlib.train import DEFAULT_LEARNING_RATES, Recipe

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def fake_record(recipe: Recipe) -> dict:
    accuracy = {"head": 0.70, "lora": 0.86}[recipe.method] + 0.01 * recipe.seed
    return {
        "method": recipe.method,
        "recipe": recipe.__dict__,
        "accuracy": accuracy,
        "evaluation_examples": 872,
        "trainable_parameters": 770 if recipe.method == "head" else 74_498,
        "trainable_fraction": 0.01,
        "seconds_per_step": 0.2,
        "train_seconds": 60.0,
        "versions": {"torch": "x"},
        "device": "cpu",
    }


def test_summary_statistics_and_files(tmp_path):
    records = run_grid(
        [Recipe("lora", method_options={"r": 8}), Recipe("head")], seeds=[0, 1, 2], train=fake_record
    )
    rows = summarize(records)
    assert [row["variant"] for row in rows] == ["head", "lora r=8"]
    lora = rows[1]
    assert math.isclose(lora["accuracy_mean"], 87.0) and math.isclose(lora["accuracy_sd"], 1.0)
    assert math.isclose(lora["ci95_seeds"], 4.303 * 1.0 / math.sqrt(3))
    assert math.isclose(lora["ci95_sampling"], 196 * math.sqrt(0.87 * 0.13 / 872))
    write_results(records, tmp_path, "adapterlib compare --out x")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["command"] == "adapterlib compare --out x" and len(saved["runs"]) == 6
    table = (tmp_path / "results.md").read_text()
    assert "| lora r=8 | 74,498 |" in table and "87.0 ± 1.0% (3 seeds)" in table
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


def test_learning_rate_curves_keep_only_default_configurations():
    def record(method, lr, accuracy, pooling="mean", options=None):
        recipe = Recipe(method, lr, pooling=pooling, method_options=options or {})
        return {
            "method": method,
            "recipe": recipe.__dict__,
            "peft_config": recipe.peft_config_dict(),
            "accuracy": accuracy,
        }

    records = [
        record("lora", 1e-3, 0.86),
        record("lora", 1e-4, 0.80),
        record("lora", 1e-3, 0.85, pooling="cls"),
        record("adapter", 1e-3, 0.85),
        record("adapter", 1e-3, 0.84, options={"dropout": 0.1}),
        record("adapter", 1e-3, 0.83, options={"position": "before_layer_norm"}),
        record("full", 5e-5, 0.87),
    ]
    curves = learning_rate_curves(records)
    assert curves == {"lora": [(1e-4, 80.0), (1e-3, 86.0)], "adapter": [(1e-3, 85.0)], "full": [(5e-5, 87.0)]}
    ax = plot_learning_rates(curves, defaults={"lora": 1e-3, "adapter": 1e-3})
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["full fine-tuning", "adapter", "LoRA"]


def test_counts_are_singular_for_one():
    assert [counted(1, "epoch"), counted(1.0, "epoch"), counted(2.0, "epoch"), counted(0.5, "epoch")] == [
        "1 epoch",
        "1 epoch",
        "2 epochs",
        "0.5 epochs",
    ]
    one_seed = markdown_table(summarize(run_grid([Recipe("head")], seeds=[0], train=fake_record)))
    assert "70.0 ± 0.0% (1 seed) | n/a |" in one_seed


# --- charts readable from the back of a room ---------------------------------------------------------------


def committed_rows() -> list[dict]:
    return json.loads((ROOT / "results" / "results.json").read_text())["summary"]


def bar_boxes(ax, renderer) -> list:
    """The display-space box of every error bar in ``ax`` (both intervals), widened by its line width."""
    from matplotlib.collections import LineCollection
    from matplotlib.transforms import Bbox

    boxes = []
    for collection in ax.collections:
        if not isinstance(collection, LineCollection):
            continue
        half = collection.get_linewidth()[0] * ax.figure.dpi / 72 / 2
        for segment in collection.get_segments():
            (x0, y0), (x1, y1) = ax.transData.transform(segment)
            boxes.append(Bbox([[min(x0, x1) - half, min(y0, y1)], [max(x0, x1) + half, max(y0, y1)]]))
    return boxes


def font_sizes(figure) -> list[float]:
    from matplotlib.text import Text

    return [t.get_fontsize() for t in figure.findobj(Text) if t.get_text().strip() and t.get_visible()]


def test_comparison_labels_never_overlap_each_other_or_an_error_bar():
    figure = plot_comparison(committed_rows())
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    labelled = 0
    for ax in figure.axes:
        labels = [t for t in ax.texts if t.get_gid() == "size label"]
        boxes = [t.get_window_extent(renderer) for t in labels]
        bars = bar_boxes(ax, renderer)
        points = sum(len(c.lines[0].get_xdata()) for c in ax.containers if c.lines[0] is not None)
        assert points and len(bars) == 2 * points  # both intervals are drawn at every point
        for i, box in enumerate(boxes):
            assert ax.get_window_extent(renderer).contains(box.x0, box.y0), labels[i].get_text()  # inside
            assert not any(box.overlaps(other) for other in boxes[i + 1 :]), labels[i].get_text()
            assert not any(box.overlaps(bar) for bar in bars), labels[i].get_text()
        labelled += len(labels)
    assert labelled == 9  # adapter r=4, 16, 64; LoRA and DoRA r=2, 8, 32; prefix n=5, 10, 20: once each
    assert min(font_sizes(figure)) >= 14
    assert figure.get_figwidth() * figure.dpi <= 900  # shown at its own size in the README, not shrunk
    legend = figure.legends[0].get_window_extent(renderer)
    assert not any(legend.overlaps(ax.get_window_extent(renderer)) for ax in figure.axes)
    plt.close(figure)


def test_comparison_has_one_panel_per_family_with_the_references_in_each():
    rows = committed_rows()
    figure = plot_comparison(rows)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["bottleneck adapters", "low-rank updates", "prefix tuning", "biases and scales"]
    full = next(row["accuracy_mean"] for row in rows if row["method"] == "full")
    for ax in figure.axes:
        assert any(list(line.get_ydata()) == [full, full] for line in ax.get_lines())
    plt.close(figure)


def test_comparison_fills_the_figure_of_an_axes_given_as_notebook_6_passes_one():
    figure, ax = plt.subplots(figsize=(8, 5))
    assert plot_comparison(committed_rows(), ax=ax) is figure
    assert ax not in figure.axes and len(figure.axes) == 4
    plt.close(figure)


def test_learning_rate_legend_sits_outside_the_data():
    runs = [json.loads(line) for line in (ROOT / "results" / "tuning.jsonl").read_text().splitlines()]
    ax = plot_learning_rates(learning_rate_curves(runs), DEFAULT_LEARNING_RATES)
    ax.figure.canvas.draw()
    renderer = ax.figure.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    points = [ax.transData.transform(xy) for line in ax.get_lines() for xy in line.get_xydata()]
    assert points and not any(legend.contains(x, y) for x, y in points)
    assert min(font_sizes(ax.figure)) >= 14
    plt.close(ax.figure)
