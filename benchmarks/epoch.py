"""One epoch over the whole SST-2 training set on this machine's CPU, fp32 against bf16 autocast.

Each (seed, precision) pair trains the adapter (the package's defaults: r=16, Pfeiffer, mean
pooling, learning rate 3e-3, length-grouped batches) for one epoch over all 67,349 training
sentences with ``adapterlib.train.train_and_evaluate``, then scores the 872 validation sentences.
The two precisions of a seed run one after the other, in random order, so that drift of a shared
machine hits both alike. Target: one epoch in at most 4 minutes at 87.5% validation accuracy or more.

Writes ``benchmarks/epoch.json``: for every run the seconds per epoch, examples per second,
validation accuracy and precision; the machine (CPU model and flags, torch version, threads) and
the load average before and after every run, so a number taken while other jobs ran shows as such.

    python benchmarks/epoch.py --data-dir ../shared/data/sst2 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from stats import load_average, machine_facts

from adapterlib.train import Recipe, train_and_evaluate

TARGET_SECONDS, TARGET_ACCURACY = 240.0, 0.875


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--method", default="adapter")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--data-dir", help="GLUE-format SST-2 folder (default: $ADAPTERLIB_SST2_DIR)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("epoch.json")))
    args = parser.parse_args()

    result = {
        "machine": machine_facts(),
        "target": {"seconds_per_epoch": TARGET_SECONDS, "accuracy": TARGET_ACCURACY},
        "runs": [],
    }
    order = random.Random(0)
    for seed in args.seeds:
        for precision in order.sample(args.precisions, k=len(args.precisions)):
            recipe = Recipe(
                args.method,
                seed=seed,
                train_size=None,
                epochs=1.0,
                batch_size=args.batch_size,
                precision=precision,
            )
            load_before = load_average()
            _, record = train_and_evaluate(recipe, data_dir=args.data_dir, progress=False)
            run = {
                "method": args.method,
                "seed": seed,
                "precision": record["precision"],
                "seconds_per_epoch": record["train_seconds"],
                "examples_per_second": record["examples_per_second"],
                "accuracy": record["accuracy"],
                "train_examples": record["train_examples"],
                "batch_size": args.batch_size,
                "learning_rate": record["recipe"]["learning_rate"],
                "load_average_before": load_before,
                "load_average_after": load_average(),
            }
            result["runs"].append(run)
            print(
                f"seed {seed} {run['precision']}: {run['seconds_per_epoch']:.0f} s per epoch, "
                f"{run['examples_per_second']:.0f} examples/s, accuracy {100 * run['accuracy']:.2f}%, "
                f"load {load_before} -> {run['load_average_after']}",
                flush=True,
            )
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    result["summary"] = {
        precision: {
            "seconds_per_epoch_median": statistics.median(r["seconds_per_epoch"] for r in runs),
            "accuracy_mean": statistics.fmean(r["accuracy"] for r in runs),
            "meets_target": all(
                r["seconds_per_epoch"] <= TARGET_SECONDS and r["accuracy"] >= TARGET_ACCURACY for r in runs
            ),
        }
        for precision in args.precisions
        if (runs := [r for r in result["runs"] if r["precision"] == precision])
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for precision, row in result["summary"].items():
        print(
            f"{precision}: {row['seconds_per_epoch_median']:.0f} s per epoch (median), "
            f"accuracy {100 * row['accuracy_mean']:.2f}% (mean), target met: {row['meets_target']}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
