"""Speed of each method on the packaged BERT, measured side by side in one process.

Every timed section runs in rounds: each round runs every variant once, in a new random order,
so that drift of a shared machine hits all of them alike. Each variant's ratio to the baseline
(base model for inference, full fine-tuning for training) is the median of its per-round ratios
with a paired bootstrap 95% interval (see ``stats.py``). Inference also times the base model a
second time under another name (``base-again``): that control's ratio is 1 by construction, and its
interval says how small a difference this run can resolve; a warning is printed when it is wider
than +-3% or misses 1.

Sections: inference and training steps at batch 32 x 64 tokens on the CPU; then, on real SST-2
sentences, examples per second with random vs length-grouped batches, and seconds per training
step of every method at the seed recipe's real lengths (length-grouped batches of 16, one round
per batch). ``results.json`` also records the machine (CPU model and flags, threads, torch version,
load average before and after).

    python benchmarks/speed.py --data-dir ../shared/data/sst2
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import datasets
import torch
from stats import control_warning, load_average, machine_facts, paired_ratio

from adapterlib import TaskType, get_peft_model, methods
from adapterlib.modeling import load_classifier

BATCH, LENGTH = 32, 64
GROUPING_BATCH, BATCHES_PER_ROUND = 16, 4
SEQ_CLS = TaskType.SEQ_CLS
VARIANTS = {method.name: method.config_class for method in methods()}  # each at its default size
Input = TypeVar("Input")


def build(name: str, pooling: str = "cls"):
    """The model of one benchmark variant; ``base`` or ``full``: the plain model, every weight trainable."""
    torch.manual_seed(0)
    model = load_classifier(pooling=pooling)
    if name == "peft-lora":
        import peft

        model = peft.get_peft_model(
            model,
            peft.LoraConfig(
                r=8,
                lora_alpha=16,
                lora_dropout=0.1,
                target_modules=["query", "value"],
                task_type=peft.TaskType.SEQ_CLS,
            ),
        )
    elif name in VARIANTS or name == "lora-merged":
        model = get_peft_model(model, VARIANTS.get(name, VARIANTS["lora"])(task_type=SEQ_CLS))
        if name == "lora-merged":
            model.merge_adapter()
    elif name == "head":
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
    return model


def training_step(
    name: str, pooling: str = "cls", lr: float = 1e-4
) -> Callable[[dict[str, torch.Tensor]], None]:
    """One AdamW step of a variant on a batch: zero the gradients, forward, backward, update."""
    model = build(name, pooling).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(batch: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    return step


def make_batch(size: int = BATCH, length: int = LENGTH) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(1000, 30000, (size, length), generator=generator),
        "attention_mask": torch.ones(size, length, dtype=torch.long),
        "labels": torch.randint(0, 2, (size,), generator=generator),
    }


def interleaved(
    steps: dict[str, Callable[[Input], object]], inputs: Sequence[Input], seed: int = 0
) -> dict[str, list[float]]:
    """Seconds of every variant in every round; round ``i`` runs each variant once on ``inputs[i]``,
    in a new random order, so that no variant always follows another."""
    for step in steps.values():
        step(inputs[0])  # warm-up
    times = {name: [] for name in steps}
    order = random.Random(seed)
    for item in inputs:
        for name in order.sample(list(steps), len(steps)):
            start = time.perf_counter()
            steps[name](item)
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]], baseline: str) -> dict:
    """Median and inter-quartile range of each variant, and its paired ratio to ``baseline``."""
    variants = {}
    for name, values in times.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        ratio = paired_ratio(values, times[baseline])
        variants[name] = {
            "median_s": median,
            "iqr_s": q3 - q1,
            "ratio": ratio.ratio,
            "ratio_ci95": [ratio.low, ratio.high],
        }
    return {"baseline": baseline, "rounds": len(times[baseline]), "variants": variants}


def inference_benchmark(rounds: int, batch: dict[str, torch.Tensor]) -> dict:
    """Forward passes; ``base-again`` is a second copy of the base model, the control."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    names = ("base", "base-again", *VARIANTS, "lora-merged")
    models = {name: build(name.removesuffix("-again")).eval() for name in names}

    def forward(model: torch.nn.Module) -> Callable[[dict[str, torch.Tensor]], None]:
        def run(batch: dict[str, torch.Tensor]) -> None:
            with torch.inference_mode():
                model(**batch)

        return run

    times = interleaved({name: forward(model) for name, model in models.items()}, [inputs] * rounds)
    result = summary(times, "base")
    control = paired_ratio(times["base-again"], times["base"])
    result["control"] = {
        "pair": ["base-again", "base"],
        "ratio": control.ratio,
        "ratio_ci95": [control.low, control.high],
        "warning": control_warning(control),
    }
    return result


def training_benchmark(rounds: int, batch: dict[str, torch.Tensor]) -> dict:
    steps = {name: training_step(name) for name in ("full", *VARIANTS, "peft-lora", "head")}
    return summary(interleaved(steps, [batch] * rounds), "full")


def sst2_examples(data_dir: str | None, examples: int) -> list[dict]:
    """The first ``examples`` of the seed recipe's shuffle, tokenised, with their labels."""
    from adapterlib.data import load_sst2
    from adapterlib.train import MAX_LENGTH, SHUFFLE_SEED

    tokenizer = collator().tokenizer
    sentences = load_sst2(data_dir)["train"].shuffle(seed=SHUFFLE_SEED).select(range(examples))
    encoded = [tokenizer(s, truncation=True, max_length=MAX_LENGTH) for s in sentences["sentence"]]
    for item, label in zip(encoded, sentences["label"]):
        item["labels"] = label
    return encoded


@functools.cache
def collator():
    """Pads a list of tokenised examples into one batch (one tokenizer for the whole script)."""
    from transformers import DataCollatorWithPadding

    from adapterlib.modeling import load_tokenizer

    return DataCollatorWithPadding(load_tokenizer())


def batches_in_order(encoded: list[dict], order: list[int], size: int) -> list[dict[str, torch.Tensor]]:
    collate = collator()
    return [collate([encoded[i] for i in order[s : s + size]]) for s in range(0, len(order), size)]


def grouped_order(encoded: list[dict], size: int) -> list[int]:
    """The order of the package's training: transformers' ``LengthGroupedSampler``."""
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = [len(e["input_ids"]) for e in encoded]
    return list(LengthGroupedSampler(size, lengths=lengths, generator=torch.Generator().manual_seed(0)))


def length_grouping_benchmark(encoded: list[dict]) -> dict:
    """Examples per second of the adapter, batches of 16, random vs length-grouped order.

    Both orders cover the same sentences; each round trains on the next four batches of each
    order, so the speed-up ``time(random) / time(length-grouped)`` is paired by round.
    """
    step = training_step("adapter", lr=1e-3)
    orders = {
        "random": torch.randperm(len(encoded), generator=torch.Generator().manual_seed(0)).tolist(),
        "length-grouped": grouped_order(encoded, GROUPING_BATCH),
    }
    batches = {name: batches_in_order(encoded, order, GROUPING_BATCH) for name, order in orders.items()}
    rounds = [
        {name: b[s : s + BATCHES_PER_ROUND] for name, b in batches.items()}
        for s in range(0, len(batches["random"]), BATCHES_PER_ROUND)
    ]

    def train_on(name: str) -> Callable[[dict], None]:
        return lambda round_batches: [step(batch) for batch in round_batches[name]]

    times = interleaved({name: train_on(name) for name in orders}, rounds)
    result = {
        name: {
            "examples_per_second": len(encoded) / sum(times[name]),
            "mean_padded_length": statistics.fmean(b["input_ids"].shape[1] for b in batches[name]),
        }
        for name in orders
    }
    speed_up = paired_ratio(times["random"], times["length-grouped"])
    result["speed-up"] = {
        "ratio": speed_up.ratio,
        "ratio_ci95": [speed_up.low, speed_up.high],
        "rounds": len(rounds),
    }
    return result


def seed_recipe_step_benchmark(encoded: list[dict]) -> dict:
    """Seconds per training step at real SST-2 lengths (length-grouped batches of 16, as in the
    seed recipe); one round per batch, every method on the same batch in a random order."""
    batches = batches_in_order(encoded, grouped_order(encoded, GROUPING_BATCH), GROUPING_BATCH)
    steps = {name: training_step(name, pooling="mean") for name in ("full", *VARIANTS, "head")}
    return summary(interleaved(steps, batches), "full")


def print_section(title: str, section: dict) -> None:
    print(
        f"\n{title}: {section['rounds']} rounds, ratio to {section['baseline']} with bootstrap 95% interval"
    )
    print(f"{'variant':12s} {'median s':>9s} {'IQR s':>8s} {'ratio':>6s}  95% interval")
    for name, row in section["variants"].items():
        low, high = row["ratio_ci95"]
        print(
            f"{name:12s} {row['median_s']:9.4f} {row['iqr_s']:8.4f} {row['ratio']:6.3f}  [{low:.3f}, {high:.3f}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--length", type=int, default=LENGTH)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--grouping-examples", type=int, default=1024)
    parser.add_argument("--out", default="benchmarks/results.json")
    args = parser.parse_args()
    if args.rounds < 2 or args.grouping_examples < 2 * GROUPING_BATCH * BATCHES_PER_ROUND:
        parser.error(
            f"need --rounds >= 2 and --grouping-examples >= {2 * GROUPING_BATCH * BATCHES_PER_ROUND} (two rounds)"
        )
    datasets.disable_progress_bars()
    torch.manual_seed(0)
    results = {"shape": f"batch {args.batch_size} x {args.length} tokens", "machine": machine_facts()}
    batch = make_batch(args.batch_size, args.length)
    results["inference"] = inference_benchmark(args.rounds, batch)
    results["training_step"] = training_benchmark(args.rounds, batch)
    encoded = sst2_examples(args.data_dir, args.grouping_examples)
    results["length_grouping"] = length_grouping_benchmark(encoded)
    results["seed_recipe_step"] = seed_recipe_step_benchmark(encoded)
    results["machine"]["load_average_after"] = load_average()

    print_section("inference", results["inference"])
    control = results["inference"]["control"]
    print(
        f"control: base-again / base = {control['ratio']:.3f} [{control['ratio_ci95'][0]:.3f}, "
        f"{control['ratio_ci95'][1]:.3f}]"
    )
    print_section("training step", results["training_step"])
    print_section("training step at real SST-2 lengths", results["seed_recipe_step"])
    grouping = results["length_grouping"]
    speed_up = grouping["speed-up"]
    print(
        f"\nlength grouping: {grouping['random']['examples_per_second']:.1f} -> "
        f"{grouping['length-grouped']['examples_per_second']:.1f} examples/s "
        f"(x{speed_up['ratio']:.2f} [{speed_up['ratio_ci95'][0]:.2f}, {speed_up['ratio_ci95'][1]:.2f}]; "
        "mean padded length "
        f"{grouping['random']['mean_padded_length']:.1f} -> {grouping['length-grouped']['mean_padded_length']:.1f})"
    )
    machine = results["machine"]
    print(
        f"\n{machine['cpu']} ({', '.join(machine['cpu_flags'])}), {machine['torch_threads']} threads, torch "
        f"{machine['torch']}; "
        f"load average {machine['load_average_before']} before, {machine['load_average_after']} after"
    )
    if control["warning"]:
        print(control["warning"])
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
