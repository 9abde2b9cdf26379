"""Choose per-method defaults on the tuning slice (train examples 2,000-2,999), never on validation.

Each line of the grid is one seed-recipe run (2,000 examples, 3 epochs, batch 16) evaluated on
the tuning slice; results are appended to results/tuning.jsonl as they finish.

    python benchmarks/tune_recipes.py --data-dir ../shared/data/sst2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets

from adapterlib.train import Recipe, train_and_evaluate

BEFORE_LN = "before_layer_norm"  # the adapter's position before it was measured against after_layer_norm
GRID = [
    Recipe("adapter", 1e-3, pooling="cls", method_options={"dropout": 0.1, "position": BEFORE_LN}),
    Recipe("adapter", 1e-3, pooling="mean", method_options={"dropout": 0.1, "position": BEFORE_LN}),
    Recipe(
        "adapter",
        1e-3,
        pooling="mean",
        method_options={"dropout": 0.1, "position": BEFORE_LN, "placement": "houlsby"},
    ),
    Recipe("adapter", 3e-3, pooling="mean", method_options={"dropout": 0.1, "position": BEFORE_LN}),
    Recipe("lora", 1e-3, pooling="mean"),
    Recipe("lora", 3e-3, pooling="mean"),
    Recipe("prefix", 1e-2, pooling="mean"),
    Recipe("full", 5e-5, pooling="mean"),
    Recipe("full", 5e-5, pooling="cls"),
    Recipe("adapter", 1e-3, pooling="mean", method_options={"dropout": 0.0, "position": BEFORE_LN}),
    # Learning-rate sweep around each default (notebook 6's sensitivity figure).
    *(
        Recipe("adapter", lr, pooling="mean", method_options={"dropout": 0.0, "position": BEFORE_LN})
        for lr in (1e-4, 3e-4, 3e-3, 1e-2)
    ),
    *(Recipe("lora", lr, pooling="mean") for lr in (1e-4, 3e-4, 1e-2)),
    *(Recipe("prefix", lr, pooling="mean") for lr in (1e-3, 3e-3, 3e-2)),
    *(Recipe("head", lr, pooling="mean") for lr in (1e-3, 3e-3, 1e-2)),
    *(Recipe("full", lr, pooling="mean") for lr in (2e-5, 1e-4)),
    # The adapter reading the sub-layer output after its LayerNorm, at every learning rate above.
    *(
        Recipe("adapter", lr, pooling="mean", method_options={"dropout": 0.0, "position": "after_layer_norm"})
        for lr in (1e-3, 1e-4, 3e-4, 3e-3, 1e-2)
    ),
    # A learning-rate sweep for BitFit, (IA)^3, DoRA and the parallel adapter at their default sizes.
    *(Recipe("bitfit", lr, pooling="mean") for lr in (1e-3, 3e-3, 1e-2)),
    *(Recipe("ia3", lr, pooling="mean") for lr in (3e-3, 1e-2, 3e-2)),
    *(Recipe("dora", lr, pooling="mean") for lr in (3e-4, 1e-3, 3e-3)),
    *(Recipe("parallel", lr, pooling="mean") for lr in (3e-4, 1e-3, 3e-3)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default="results/tuning.jsonl")
    parser.add_argument("--only", type=int, nargs="*", help="indices into the grid")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for index, recipe in enumerate(GRID):
        if args.only and index not in args.only:
            continue
        _, record = train_and_evaluate(
            recipe, data_dir=args.data_dir, evaluate_on="tuning", progress=False, output_dir="runs/tuning"
        )
        with out.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(
            f"{index}: {recipe.method} {recipe.pooling} lr={recipe.learning_rate} {recipe.method_options} "
            f"-> {record['accuracy']:.4f}"
        )


if __name__ == "__main__":
    main()
