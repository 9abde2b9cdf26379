"""The comparison summary: grouping by variant, spread, intervals, and the written files."""

import json
import math

from adapterlib.compare import (
    counted,
    learning_rate_curves,
    markdown_table,
    plot_learning_rates,
    run_grid,
    summarize,
    write_results,
)
from adapterlib.train import Recipe


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
