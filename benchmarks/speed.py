"""Speed of each method on the packaged BERT, measured side by side in one process.

Inference and training steps run at batch 32 x 64 tokens on the CPU, the methods interleaved
in a new random order every round so that drift of a shared machine hits all of them alike; medians and
inter-quartile ranges are reported with ratios to the baseline (base model for inference,
full fine-tuning for training). Two more sections use real SST-2 sentences: examples per second
with random vs length-grouped batches, and seconds per training step of every method at the
seed recipe's real lengths (batches of 16).

    python benchmarks/speed.py --data-dir ../shared/data/sst2
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from adapterlib import AdapterConfig, LoraConfig, PrefixTuningConfig, TaskType, get_peft_model
from adapterlib.modeling import load_classifier

BATCH, LENGTH = 32, 64
SEQ_CLS = TaskType.SEQ_CLS
VARIANTS = {
    "adapter": lambda: AdapterConfig(task_type=SEQ_CLS),
    "lora": lambda: LoraConfig(task_type=SEQ_CLS),
    "prefix": lambda: PrefixTuningConfig(task_type=SEQ_CLS),
}


def build(name: str, pooling: str = "cls"):
    """The model of one benchmark variant; ``base`` or ``full``: the plain model, every weight trainable."""
    torch.manual_seed(0)
    model = load_classifier(pooling=pooling)
    if name == "peft-lora":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"], task_type=peft.TaskType.SEQ_CLS))
    elif name in VARIANTS or name == "lora-merged":
        model = get_peft_model(model, VARIANTS.get(name, VARIANTS["lora"])())
        if name == "lora-merged":
            model.merge_adapter()
    elif name == "head":
        model.requires_grad_(False)
        model.classifier.requires_grad_(True)
    return model


def training_step(name: str, pooling: str = "cls", lr: float = 1e-4) -> Callable[[dict[str, torch.Tensor]], None]:
    """One AdamW step of a variant on a batch: zero the gradients, forward, backward, update."""
    model = build(name, pooling).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def step(batch: dict[str, torch.Tensor]) -> None:
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()

    return step


def make_batch() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "input_ids": torch.randint(1000, 30000, (BATCH, LENGTH), generator=generator),
        "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
        "labels": torch.randint(0, 2, (BATCH,), generator=generator),
    }


def interleaved(steps: dict[str, callable], rounds: int) -> dict[str, list[float]]:
    """Each round runs every variant once, in a new random order, so no variant always follows another."""
    times = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up
    order = random.Random(0)
    for _ in range(rounds):
        for name in order.sample(list(steps), len(steps)):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summary(times: dict[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    base = statistics.median(times[baseline])
    table = {}
    for name, values in times.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        table[name] = {"median_s": median, "iqr_s": q3 - q1, "ratio": median / base}
    return table


def inference_benchmark(rounds: int) -> dict:
    batch = {k: v for k, v in make_batch().items() if k != "labels"}
    models = {name: build(name).eval() for name in ("base", "adapter", "lora", "lora-merged", "prefix")}

    def step(model):
        def run():
            with torch.inference_mode():
                model(**batch)
        return run

    return summary(interleaved({n: step(m) for n, m in models.items()}, rounds), "base")


def training_benchmark(rounds: int) -> dict:
    batch = make_batch()
    steps = {name: functools.partial(training_step(name), batch) for name in ("full", "adapter", "lora", "peft-lora", "prefix", "head")}
    return summary(interleaved(steps, rounds), "full")


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
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = [len(e["input_ids"]) for e in encoded]
    return list(LengthGroupedSampler(size, lengths=lengths, generator=torch.Generator().manual_seed(0)))


def length_grouping_benchmark(encoded: list[dict]) -> dict:
    """Examples per second of the adapter, batches of 16, random vs length-grouped order."""
    step = training_step("adapter", lr=1e-3)
    orders = {
        "random": torch.randperm(len(encoded), generator=torch.Generator().manual_seed(0)).tolist(),
        "length-grouped": grouped_order(encoded, 16),
    }
    result = {}
    for name, order in orders.items():
        batches = batches_in_order(encoded, order, 16)
        start = time.perf_counter()
        for batch in batches:
            step(batch)
        seconds = time.perf_counter() - start
        padded = statistics.fmean(b["input_ids"].shape[1] for b in batches)
        result[name] = {"examples_per_second": len(encoded) / seconds, "mean_padded_length": padded}
    result["speed-up"] = result["length-grouped"]["examples_per_second"] / result["random"]["examples_per_second"]
    return result


def seed_recipe_step_benchmark(encoded: list[dict]) -> dict:
    """Seconds per training step at real SST-2 lengths (length-grouped batches of 16, as in the
    seed recipe), every method on the same batch in turn; ratios of medians to full fine-tuning."""
    batches = batches_in_order(encoded, grouped_order(encoded, 16), 16)
    steps = {name: training_step(name, pooling="mean") for name in ("full", "adapter", "lora", "prefix", "head")}
    times = {name: [] for name in steps}
    for batch in batches:
        for name, run in steps.items():
            start = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - start)
    return summary(times, "full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--grouping-examples", type=int, default=1024)
    parser.add_argument("--out", default="benchmarks/results.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {"shape": f"batch {BATCH} x {LENGTH} tokens", "threads": torch.get_num_threads(), "torch": torch.__version__}
    results["inference"] = inference_benchmark(args.rounds)
    results["training_step"] = training_benchmark(args.rounds)
    encoded = sst2_examples(args.data_dir, args.grouping_examples)
    results["length_grouping"] = length_grouping_benchmark(encoded)
    results["seed_recipe_step"] = seed_recipe_step_benchmark(encoded)
    for section, baseline in (("inference", "base"), ("training_step", "full"), ("seed_recipe_step", "full")):
        print(f"\n{section} (ratio to {baseline})")
        print(f"{'variant':12s} {'median s':>9s} {'IQR s':>8s} {'ratio':>6s}")
        for name, row in results[section].items():
            print(f"{name:12s} {row['median_s']:9.4f} {row['iqr_s']:8.4f} {row['ratio']:6.2f}")
    grouping = results["length_grouping"]
    print(f"\nlength grouping: {grouping['random']['examples_per_second']:.1f} -> {grouping['length-grouped']['examples_per_second']:.1f} examples/s "
          f"(x{grouping['speed-up']:.2f}; mean padded length {grouping['random']['mean_padded_length']:.1f} -> {grouping['length-grouped']['mean_padded_length']:.1f})")
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
