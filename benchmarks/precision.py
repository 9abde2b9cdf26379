"""fp32 against bf16 autocast, side by side: training speed and validation accuracy.

Every (method, seed) trains twice on the seed recipe (the package defaults), once in each
precision, the two in random order, so that the drift of a shared machine hits both alike. Per
method the summary gives, for each precision, the mean validation accuracy and examples per
second, and over the seeds the paired accuracy difference ``bf16 - fp32`` (mean, sd, and the
Student-t 95% interval of the mean) and the median speed ratio ``bf16 / fp32``. bf16 can become
the default where the speed-up is real and the accuracy difference sits inside the noise.

    python benchmarks/precision.py --data-dir ../shared/data/sst2 --methods adapter lora --seeds 0 1 2

``benchmarks/precision.json`` is rewritten after every run, so a long measurement can be read
while it goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
from pathlib import Path

import torch

from adapterlib.compare import T_975
from adapterlib.modeling import cpu_computes_bf16, training_choices, training_device
from adapterlib.train import Recipe, train_and_evaluate

PRECISIONS = ("fp32", "bf16")


def summarize(runs: list[dict]) -> dict[str, dict]:
    """Per method: accuracy and speed in each precision, paired differences over the seeds."""
    summary = {}
    for method in dict.fromkeys(run["method"] for run in runs):
        by_seed = {}
        for run in runs:
            if run["method"] == method:
                by_seed.setdefault(run["seed"], {})[run["precision"]] = run
        pairs = [seed_runs for seed_runs in by_seed.values() if set(seed_runs) == set(PRECISIONS)]
        if not pairs:
            continue
        differences = [100 * (pair["bf16"]["accuracy"] - pair["fp32"]["accuracy"]) for pair in pairs]
        sd = statistics.stdev(differences) if len(pairs) > 1 else None
        summary[method] = {
            **{
                p: {
                    "accuracy_mean": statistics.fmean(100 * pair[p]["accuracy"] for pair in pairs),
                    "examples_per_second_mean": statistics.fmean(
                        pair[p]["examples_per_second"] for pair in pairs
                    ),
                }
                for p in PRECISIONS
            },
            "paired_seeds": len(pairs),
            "accuracy_difference_mean": statistics.fmean(differences),
            "accuracy_difference_sd": sd,
            "accuracy_difference_ci95": None
            if sd is None
            else T_975.get(len(pairs) - 1, 1.96) * sd / math.sqrt(len(pairs)),
            "speed_ratio_median": statistics.median(
                pair["bf16"]["examples_per_second"] / pair["fp32"]["examples_per_second"] for pair in pairs
            ),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=training_choices(), default=["adapter", "lora"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-size", type=int, default=2_000, help="0 = the whole split")
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", help="default: the packaged MiniLM-L6")
    parser.add_argument("--data-dir", help="GLUE-format SST-2 folder (default: $ADAPTERLIB_SST2_DIR)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("precision.json")))
    args = parser.parse_args()

    if not cpu_computes_bf16() and training_device() == "cpu":
        print(
            "warning: this CPU has no bf16 instructions; bf16 is emulated here and will be slower than fp32"
        )
    machine = {
        "device": training_device(),
        "processor": platform.processor() or platform.machine(),
        "cpu_computes_bf16": cpu_computes_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    order = random.Random(0)
    runs = []
    for method in args.methods:
        for seed in args.seeds:
            for precision in order.sample(PRECISIONS, k=len(PRECISIONS)):
                recipe = Recipe(
                    method,
                    seed=seed,
                    train_size=args.train_size or None,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    precision=precision,
                )
                _, record = train_and_evaluate(recipe, args.model, args.data_dir, progress=False)
                runs.append(
                    {
                        "method": method,
                        "seed": seed,
                        "precision": record["precision"],
                        "accuracy": record["accuracy"],
                        "examples_per_second": record["examples_per_second"],
                        "train_seconds": record["train_seconds"],
                        "recipe": record["recipe"],
                        "peft_config": record["peft_config"],
                    }
                )
                print(
                    f"{method} seed {seed} {precision}: {100 * record['accuracy']:.2f}%, "
                    f"{record['examples_per_second']:.1f} examples/s",
                    flush=True,
                )
                result = {"machine": machine, "summary": summarize(runs), "runs": runs}
                Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for method, row in result["summary"].items():
        interval = row["accuracy_difference_ci95"]
        print(
            f"{method}: bf16 - fp32 accuracy {row['accuracy_difference_mean']:+.2f} points"
            f"{'' if interval is None else f' (95% CI +-{interval:.2f})'}, speed x{row['speed_ratio_median']:.2f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
