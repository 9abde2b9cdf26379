"""Seconds per SST-2 training epoch on a GPU: the adapter and full fine-tuning of the packaged MiniLM-L6.

The whole training set (67,349 sentences) is tokenised once, sorted by length (ties broken at
random), cut into batches, each batch padded to its own longest sentence, and every tensor moved
to the device once; the batches then run in a random order. A plain PyTorch loop trains each
method for one epoch: bf16 autocast (weights and AdamW state stay float32), AdamW (fused on
CUDA) at the package's learning rate with linear decay, gradient clipping at 1.0, mean pooling.
One forward/backward pass on a batch of each distinct shape warms the kernels up first (no
update) and is timed apart as ``warmup_s``. cuDNN's attention is switched off on CUDA: it builds a
kernel for each new batch shape. Then the validation split is scored.

Writes ``benchmarks/gpu_epoch.json``: seconds per epoch, examples per second, validation accuracy,
device name, torch version, batch size, precision. Target: at most 5 s per epoch on an
H100/H200-class GPU.

    python benchmarks/gpu_epoch.py --data-dir ../shared/data/sst2
    python benchmarks/gpu_epoch.py --device cpu --train-size 256 --max-length 32 --batch-size 32 \\
        --out /tmp/gpu_epoch.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from pathlib import Path

import datasets
import torch
from stats import load_average, machine_facts
from torch import nn

from adapterlib import AdapterConfig, TaskType, get_peft_model
from adapterlib.data import load_sst2
from adapterlib.modeling import load_classifier, load_tokenizer
from adapterlib.train import DEFAULT_LEARNING_RATES, DEFAULT_POOLING, MAX_LENGTH, SHUFFLE_SEED

METHODS = ("adapter", "full")
TARGET_EPOCH_S = 5.0
MIB = 2**20
Batch = dict[str, torch.Tensor]


def length_grouped_batches(
    token_ids: list[list[int]], labels: list[int], size: int, pad_id: int, seed: int = 0
) -> list[Batch]:
    """Batches of ``size`` sentences of similar length, each padded to its own longest, in random order.

    Sorting by length makes the padding of a batch at most the spread of lengths inside it, so
    almost every position computed is a real token.
    """
    shuffle = random.Random(seed)
    ties = [shuffle.random() for _ in token_ids]
    order = sorted(range(len(token_ids)), key=lambda i: (len(token_ids[i]), ties[i]))
    batches = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        longest = max(len(token_ids[i]) for i in rows)
        input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for row, i in enumerate(rows):
            input_ids[row, : len(token_ids[i])] = torch.tensor(token_ids[i])
            attention_mask[row, : len(token_ids[i])] = 1
        batches.append(
            {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "labels": torch.tensor([labels[i] for i in rows]),
            }
        )
    shuffle.shuffle(batches)
    return batches


def build(method: str) -> nn.Module:
    """The packaged MiniLM-L6 with mean pooling: with the default adapter (r=16), or all weights trainable."""
    torch.manual_seed(0)
    model = load_classifier(pooling=DEFAULT_POOLING)
    if method == "adapter":
        model = get_peft_model(model, AdapterConfig(task_type=TaskType.SEQ_CLS))
    return model


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_batch_per_shape(batches: list[Batch]) -> list[Batch]:
    """One batch of each distinct (rows, length) shape, so that any kernel chosen per shape is
    chosen before the clock starts."""
    shapes = {tuple(batch["input_ids"].shape): batch for batch in batches}
    return list(shapes.values())


def train_epoch(
    model: nn.Module, batches: list[Batch], lr: float, device: torch.device, precision: str
) -> dict[str, float]:
    """One epoch of AdamW with linear decay to 0 and gradient clipping at 1.0; warm-up and epoch seconds, mean loss."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, fused=device.type == "cuda")
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / len(batches))
    model.train()

    start = time.perf_counter()
    for batch in one_batch_per_shape(batches):
        with autocast(device, precision):
            model(**batch).loss.backward()
    optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    warmup_s = time.perf_counter() - start

    total_loss = torch.zeros((), device=device)
    start = time.perf_counter()
    for batch in batches:
        with autocast(device, precision):
            loss = model(**batch).loss
        loss.backward()
        nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        total_loss += loss.detach().float()
    synchronize(device)
    return {
        "warmup_s": warmup_s,
        "epoch_s": time.perf_counter() - start,
        "mean_loss": total_loss.item() / len(batches),
    }


@torch.inference_mode()
def accuracy(model: nn.Module, batches: list[Batch], device: torch.device, precision: str) -> float:
    """Fraction of sentences whose highest logit is their label."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for batch in batches:
        with autocast(device, precision):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        correct += (logits.argmax(-1) == batch["labels"]).sum()
    return correct.item() / sum(len(b["labels"]) for b in batches)


def prepared_batches(split, tokenizer, max_length: int, batch_size: int, device: torch.device) -> list[Batch]:
    """Tokenise a split once and return its length-grouped batches, already on ``device``."""
    token_ids = tokenizer(list(split["sentence"]), truncation=True, max_length=max_length)["input_ids"]
    batches = length_grouped_batches(token_ids, list(split["label"]), batch_size, tokenizer.pad_token_id)
    return [{k: v.to(device) for k, v in batch.items()} for batch in batches]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=MAX_LENGTH)
    parser.add_argument(
        "--train-size",
        type=int,
        default=None,
        help="first N sentences of the shuffled training set (default: all)",
    )
    parser.add_argument(
        "--validation-size", type=int, default=None, help="first N validation sentences (default: all 872)"
    )
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--out", default="benchmarks/gpu_epoch.json")
    args = parser.parse_args()
    datasets.disable_progress_bars()
    device = torch.device(args.device)
    if device.type == "cuda":
        # cuDNN's attention builds a kernel for every new (batch, length) shape, 0.2-0.7 s each,
        # and length-grouped batches bring dozens of shapes; flash attention needs no such step.
        torch.backends.cuda.enable_cudnn_sdp(False)
    machine = machine_facts()
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {machine['cpu']}",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "precision": "bf16 autocast, float32 weights and AdamW state"
        if args.precision == "bf16"
        else "float32",
        "target_epoch_s": TARGET_EPOCH_S,
        "machine": machine,
    }

    start = time.perf_counter()
    sst2 = load_sst2(args.data_dir)
    train, validation = sst2["train"], sst2["validation"]
    if args.train_size is not None:
        train = train.shuffle(seed=SHUFFLE_SEED).select(range(args.train_size))
    if args.validation_size is not None:
        validation = validation.select(range(args.validation_size))
    tokenizer = load_tokenizer()
    train_batches = prepared_batches(train, tokenizer, args.max_length, args.batch_size, device)
    validation_batches = prepared_batches(validation, tokenizer, args.max_length, args.batch_size, device)
    results["data_preparation_s"] = time.perf_counter() - start
    results["train_examples"], results["validation_examples"] = len(train), len(validation)
    results["steps_per_epoch"] = len(train_batches)
    results["mean_padded_length"] = sum(b["input_ids"].numel() for b in train_batches) / len(train)
    results["mean_real_length"] = sum(int(b["attention_mask"].sum()) for b in train_batches) / len(train)

    results["methods"] = {}
    for method in args.methods:
        model = build(method).to(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        lr = DEFAULT_LEARNING_RATES[method]
        timings = train_epoch(model, train_batches, lr, device, args.precision)
        start = time.perf_counter()
        validation_accuracy = accuracy(model, validation_batches, device, args.precision)
        results["methods"][method] = {
            "order": len(results["methods"]) + 1,
            "epoch_s": timings["epoch_s"],
            "examples_per_s": len(train) / timings["epoch_s"],
            "validation_accuracy": validation_accuracy,
            "validation_s": time.perf_counter() - start,
            "warmup_s": timings["warmup_s"],
            "warmup_shapes": len(one_batch_per_shape(train_batches)),
            "mean_loss": timings["mean_loss"],
            "learning_rate": lr,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "peak_memory_mib": torch.cuda.max_memory_allocated(device) / MIB
            if device.type == "cuda"
            else None,
        }
        row = results["methods"][method]
        print(
            f"{method:8s} {row['epoch_s']:7.2f} s/epoch  {row['examples_per_s']:9.0f} examples/s  "
            f"validation accuracy {validation_accuracy:.4f}"
        )
        del model
    results["machine"]["load_average_after"] = load_average()

    print(
        f"{results['device']}, torch {results['torch']}, batch {args.batch_size}, {results['precision']}, "
        f"{results['train_examples']} sentences in {results['steps_per_epoch']} batches "
        f"(mean length {results['mean_real_length']:.1f} real, {results['mean_padded_length']:.1f} padded)"
    )
    slow = [m for m, row in results["methods"].items() if row["epoch_s"] > TARGET_EPOCH_S]
    if device.type == "cuda" and slow:
        print(f"above the {TARGET_EPOCH_S:.0f} s target: {', '.join(slow)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
