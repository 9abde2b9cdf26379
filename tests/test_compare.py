"""The comparison summary: grouping by variant, spread, intervals, and the written files."""

import json
import math

from adapterlib.compare import run_grid, summarize, write_results
from adapterlib.train import Recipe


def fake_record(recipe: Recipe) -> dict:
    accuracy = {"head": 0.70, "lora": 0.86}[recipe.method] + 0.01 * recipe.seed
    return {
        "method": recipe.method, "recipe": recipe.__dict__, "accuracy": accuracy, "evaluation_examples": 872,
        "trainable_parameters": 770 if recipe.method == "head" else 74_498, "trainable_fraction": 0.01,
        "seconds_per_step": 0.2, "train_seconds": 60.0, "versions": {"torch": "x"}, "device": "cpu",
    }


def test_summary_statistics_and_files(tmp_path):
    records = run_grid([Recipe("lora", method_options={"r": 8}), Recipe("head")], seeds=[0, 1, 2], train=fake_record)
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
