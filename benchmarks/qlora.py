"""LoRA on a quantized base (QLoRA) against LoRA on the float base: accuracy, memory, step time.

Accuracy, on SST-2 with the LoRA recipe of the comparison grid (r = 8 on query and value, the
seed recipe: 2,000 sentences, 3 epochs, batch 16, learning rate 1e-3, mean pooling, precision
``auto``), for every seed:

* (a) ``float``: LoRA trained on the float32 base;
* (b) ``float->nf4``: (a)'s trained LoRA and head put on the NF4 base, no retraining (what the
  quantization alone costs);
* (c) ``nf4``: LoRA trained on the NF4 base (double quantization, block 64): QLoRA;
* (d) ``int8``: LoRA trained on the per-row int8 base;
* (e) ``nf4 merged``: (c) merged into the base by dequantizing, adding and quantizing again
  (:func:`adapterlib.quantize.merge_and_requantize`), with the share of 4-bit codes that changed.

Memory of the frozen Linear weights in each storage format, in closed form and measured on the
model's tensors. Step time of one training step (forward, backward, AdamW) of LoRA on each base,
timed in rounds as the speed benchmark does (``benchmarks/stats.py``).

    python benchmarks/qlora.py --data-dir /work/shared/data/sst2         # about an hour on 2 cores
    python benchmarks/qlora.py --summarize                                # table and plot only

Runs append to ``results/qlora/runs.jsonl`` as they finish; a finished (seed, variant) is skipped.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from speed import make_batch
from stats import machine_facts, paired_ratio
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding

from adapterlib.compare import T_975
from adapterlib.modeling import load_classifier, load_tokenizer, resolve_precision
from adapterlib.peft_model import get_peft_model
from adapterlib.quantize import (
    QuantizationConfig,
    QuantizedLinear,
    merge_and_requantize,
    quantize_model,
    storage_report,
    unpack_4bit,
)
from adapterlib.train import Recipe, tokenized_splits, train_and_evaluate

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "qlora"
BENCHMARK_JSON = Path(__file__).with_suffix(".json")
LORA = {"method": "lora", "method_options": {"r": 8}}
TRAINED_BASES = {"float": "none", "nf4": "nf4", "int8": "int8"}
VARIANTS = ("float", "float->nf4", "nf4", "int8", "nf4 merged")
FORMATS = {  # bits per weight in closed form, for a Linear with k inputs (the scale of a row: 32 / k)
    "float32": lambda k: 32.0,
    "bfloat16": lambda k: 16.0,
    "int8": lambda k: 8 + 32 / k,
    "nf4": lambda k: 4 + 32 / 64,
    "nf4 + double quantization": lambda k: 4 + 8 / 64 + 32 / (64 * 256),
}


def accuracy(model, evaluation, tokenizer, precision: str) -> float:
    """Validation accuracy of ``model`` (eval mode, batches of 64, the run's precision)."""
    loader = DataLoader(evaluation, batch_size=64, collate_fn=DataCollatorWithPadding(tokenizer))
    model.eval()
    correct = 0
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        for batch in loader:
            labels = batch.pop("labels")
            correct += int((model(**batch).logits.argmax(-1) == labels).sum())
    return correct / len(evaluation)


def carry_over(trained, pooling: str, quantization: str):
    """``trained``'s LoRA and head on a freshly loaded base stored as ``quantization``."""
    model = get_peft_model(
        load_classifier(None, num_labels=2, pooling=pooling, quantization=quantization), trained.active_config
    )
    tensors = {k: v for k, v in trained.state_dict().items() if ".adapters." in k}
    unexpected = model.load_state_dict(tensors, strict=False).unexpected_keys
    if unexpected:
        raise RuntimeError(f"tensors without a place on the quantized model: {unexpected[:3]}")
    return model


def changed_codes(before: list[torch.Tensor], layers: list[QuantizedLinear]) -> float:
    """The share of 4-bit codes that differ between ``before`` (packed) and the layers' codes now."""
    changed = total = 0
    for packed, layer in zip(before, layers, strict=True):
        count = layer.in_features * layer.out_features
        changed += int((unpack_4bit(packed, count) != unpack_4bit(layer.packed, count)).sum())
        total += count
    return changed / total


def run_seed(seed: int, data_dir: str, done: set[tuple[int, str]], log: Path) -> None:
    def write(variant: str, record: dict) -> None:
        with log.open("a") as f:
            f.write(json.dumps({"variant": variant, "seed": seed} | record) + "\n")
        print(f"seed {seed} {variant}: {100 * record['accuracy']:.2f}%", flush=True)

    tokenizer = load_tokenizer()
    _, evaluation = tokenized_splits(tokenizer, data_dir, 2_000, "validation")
    for variant, base in TRAINED_BASES.items():
        needs = {(seed, variant)} | ({(seed, "float->nf4")} if variant == "float" else set())
        needs |= {(seed, "nf4 merged")} if variant == "nf4" else set()
        if needs <= done:
            continue
        recipe = Recipe(seed=seed, base_quantization=base, **LORA)
        model, record = train_and_evaluate(recipe, data_dir=data_dir, progress=False)
        write(variant, record)
        precision = record["precision"]
        if variant == "float":
            on_nf4 = carry_over(model, recipe.pooling, "nf4")
            write("float->nf4", {"accuracy": accuracy(on_nf4, evaluation, tokenizer, precision)})
        if variant == "nf4":
            layers = [m for m in model.modules() if isinstance(m, QuantizedLinear)]
            unmerged = accuracy(model, evaluation, tokenizer, precision)
            before = [layer.packed.clone() for layer in layers]
            merged = merge_and_requantize(model)
            write(
                "nf4 merged",
                {
                    "accuracy": accuracy(merged, evaluation, tokenizer, precision),
                    "accuracy_unmerged_same_loop": unmerged,
                    "codes_changed": changed_codes(before, layers),
                },
            )


def memory() -> dict:
    """Bits per Linear weight and MB of the frozen base in each format: closed form and measured."""
    model = load_classifier(None, pooling="mean")
    linears = [
        m for layer in model.bert.encoder.layer for m in layer.modules() if isinstance(m, torch.nn.Linear)
    ]
    weights = sum(m.weight.numel() for m in linears)
    other = sum(p.numel() for p in model.parameters()) - weights
    rows = {}
    for name, bits in FORMATS.items():
        closed = sum(m.weight.numel() * bits(m.in_features) for m in linears) / weights
        if name in ("float32", "bfloat16"):
            measured = 8 * torch.finfo(getattr(torch, name)).bits / 8
        else:
            config = QuantizationConfig(
                method="int8" if name == "int8" else "nf4", double_quant="double" in name
            )
            report = storage_report(quantize_model(load_classifier(None, pooling="mean"), config))
            measured = report["bits_per_quantized_weight"]
        rows[name] = {
            "bits_per_weight_closed_form": closed,
            "bits_per_weight_measured": measured,
            "bytes_per_weight": measured / 8,
            "linear_weights_mb": weights * measured / 8 / 1e6,
            "model_mb_other_tensors_float32": (weights * measured / 8 + 4 * other) / 1e6,
        }
    return {"linear_weights": weights, "other_parameters": other, "formats": rows}


def step_times(rounds: int) -> dict:
    """Seconds per LoRA training step (batch 16 x 64 tokens) on each base, in paired rounds."""
    models = {}
    for variant, base in TRAINED_BASES.items():
        model = get_peft_model(
            load_classifier(None, pooling="mean", quantization=base), Recipe(**LORA).peft_config()
        )
        models[variant] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3))
    batch = make_batch(16, 64)
    precision = resolve_precision("auto", "cpu")

    def step(model, optimizer) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started

    for model, optimizer in models.values():
        step(model, optimizer)  # warm-up
    times = {variant: [] for variant in models}
    order = random.Random(0)
    for _ in range(rounds):
        for variant in order.sample(list(models), len(models)):
            times[variant].append(step(*models[variant]))
    return {
        "precision": precision,
        "rounds": rounds,
        "median_seconds": {v: statistics.median(t) for v, t in times.items()},
        "ratio_to_float": {
            v: paired_ratio(t, times["float"])._asdict() for v, t in times.items() if v != "float"
        },
    }


def summarize(log: Path) -> dict:
    records = [json.loads(line) for line in log.read_text().splitlines()]
    rows = {}
    for variant in VARIANTS:
        values = [100 * r["accuracy"] for r in records if r["variant"] == variant]
        if not values:
            continue
        mean = statistics.fmean(values)
        half = (
            T_975[len(values) - 1] * statistics.stdev(values) / len(values) ** 0.5
            if len(values) > 1
            else None
        )
        rows[variant] = {"seeds": len(values), "accuracy": values, "mean": mean, "ci95_seeds": half}
    return rows


def plot(rows: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    names = list(rows)
    for i, name in enumerate(names):
        row = rows[name]
        ax.scatter([i] * len(row["accuracy"]), row["accuracy"], color="0.6", s=12, zorder=2)
        ax.errorbar(i, row["mean"], yerr=row["ci95_seeds"] or 0, fmt="o", color="C0", capsize=4, zorder=3)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("SST-2 validation accuracy (%)")
    ax.set_title("LoRA r=8 on a float, 4-bit and 8-bit base (mean, 95% interval over seeds)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20, help="rounds of the step timing")
    parser.add_argument("--summarize", action="store_true", help="only rebuild the table and plot")
    parser.add_argument("--skip-training", action="store_true", help="only memory and step time")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    log = OUT / "runs.jsonl"
    if not args.summarize:
        if not args.skip_training:
            done = set()
            if log.exists():
                done = {(r["seed"], r["variant"]) for r in map(json.loads, log.read_text().splitlines())}
            for seed in args.seeds:
                run_seed(seed, args.data_dir, done, log)
        facts = machine_facts()
        BENCHMARK_JSON.write_text(
            json.dumps({"machine": facts, "memory": memory(), "step_time": step_times(args.rounds)}, indent=1)
            + "\n"
        )
    rows = summarize(log)
    (OUT / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, OUT / "accuracy.png")
    for name, row in rows.items():
        half = f" +- {row['ci95_seeds']:.2f}" if row["ci95_seeds"] is not None else ""
        print(f"{name:>12}: {row['mean']:.2f}%{half} ({row['seeds']} seeds)")


if __name__ == "__main__":
    sys.exit(main())
