"""Serving four tasks from one base: one mixed batch against switching adapters task by task.

Four task adapters (SST-2, TREC with its 6-class head, SUBJ, CR) sit on the packaged MiniLM
(mean pooling), and one batch holds the first ``--per-task`` sentences of each task's evaluation
file, the tasks interleaved. Inference only (``torch.inference_mode``), one forward pass per
variant and round:

* ``switching``: for each task, ``set_adapter(task)`` and a forward pass over that task's
  sentences (four passes of ``--per-task``), what a server does without mixed batches;
* ``switching-again``: the same, timed again: the control, whose ratio is 1 by construction;
* ``mixed``: one :func:`adapterlib.multitask.mixed_forward` over the whole batch;
* ``one-task``: one forward pass of the whole batch through one adapter, the cost of a batch with
  nothing to route (the floor the other two approach).

Each variant runs once per round in a fresh random order (``speed.interleaved``); ratios to
``switching`` are medians of per-round ratios with paired bootstrap 95% intervals (``stats.py``).
Run for LoRA (r=8 on query and value) and for the bottleneck adapter (r=16, Pfeiffer): the two
kinds of routing, an update added to a shared ``W x`` and a site run group by group. The weights
are random stand-ins for trained ones (the speed does not depend on their values). Writes
``benchmarks/mixed_batch.json``.

    nice python benchmarks/mixed_batch.py --data-root ../shared/data --rounds 15

One torch thread by default: on a machine shared with other jobs, two threads that wait for each
other at every operation made each pass many times slower and the timings erratic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from speed import interleaved, print_section, summary
from stats import control_warning, load_average, machine_facts, paired_ratio

from adapterlib import AdapterConfig, LoraConfig, TaskType, get_peft_model
from adapterlib.modeling import load_classifier, load_tokenizer
from adapterlib.multitask import mixed_forward, set_head
from adapterlib.tasks import get_task, read_task

TASKS = ("sst2", "trec", "subj", "cr")
METHODS = {
    "lora": LoraConfig(task_type=TaskType.SEQ_CLS, r=8),
    "adapter": AdapterConfig(task_type=TaskType.SEQ_CLS, r=16),
}


def build(config) -> torch.nn.Module:
    """The MiniLM with one adapter and head per task, every adapter moved off its zero start."""
    torch.manual_seed(0)
    model = get_peft_model(load_classifier(pooling="mean"), config, TASKS[0])
    for task in TASKS[1:]:
        model.add_adapter(task, config)
    for task in TASKS:
        if get_task(task).num_classes != 2:
            set_head(model, task, get_task(task).num_classes)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".adapters." in name:
                parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.eval()


def mixed_sentences(data_root: str, per_task: int) -> tuple[list[str], list[str]]:
    """``per_task`` evaluation sentences of each task, interleaved, and the task of each."""
    columns = [read_task(task, data_root)["evaluation"].sentences[:per_task] for task in TASKS]
    sentences = [sentence for row in zip(*columns) for sentence in row]
    return sentences, [task for _ in range(per_task) for task in TASKS]


def variants(model, batch: dict[str, torch.Tensor], names: list[str]) -> dict:
    rows = {task: torch.tensor([i for i, n in enumerate(names) if n == task]) for task in TASKS}

    def switching(_) -> None:
        with torch.inference_mode():
            for task in TASKS:
                model.set_adapter(task)
                model(**{k: v[rows[task]] for k, v in batch.items()})

    def mixed(_) -> None:
        with torch.inference_mode():
            mixed_forward(model, names, **batch)

    def one_task(_) -> None:
        model.set_adapter(TASKS[0])
        with torch.inference_mode():
            model(**batch)

    return {"switching": switching, "switching-again": switching, "mixed": mixed, "one-task": one_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-root", default=None, help="folder with sst2/ and senteval/ ($ADAPTERLIB_DATA_ROOT)"
    )
    parser.add_argument("--per-task", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: steady on a shared machine)"
    )
    parser.add_argument("--out", default=str(Path(__file__).with_name("mixed_batch.json")))
    args = parser.parse_args()
    if args.rounds < 2 or args.per_task < 1:
        parser.error("need --rounds >= 2 and --per-task >= 1")
    torch.set_num_threads(args.threads)
    machine = machine_facts()
    sentences, names = mixed_sentences(args.data_root, args.per_task)
    batch = dict(load_tokenizer()(sentences, padding=True, return_tensors="pt"))
    result = {
        "setting": (
            f"packaged MiniLM-L6, mean pooling, fp32 inference, {len(TASKS)} tasks x {args.per_task} sentences "
            f"= batch {len(names)} x {batch['input_ids'].shape[1]} tokens, torch threads {torch.get_num_threads()}"
        ),
        "methods": {},
    }
    for method, config in METHODS.items():
        model = build(config)
        times = interleaved(variants(model, batch, names), [None] * args.rounds)
        section = summary(times, "switching")
        control = paired_ratio(times["switching-again"], times["switching"])
        section["control_warning"] = control_warning(control)
        for row in section["variants"].values():
            row["examples_per_s"] = len(names) / row["median_s"]
        result["methods"][method] = section
        print_section(f"{method}: one batch of {len(names)} (ratio to switching)", section)
        print(
            f"{'':12s} examples/s: "
            + ", ".join(f"{name} {row['examples_per_s']:.0f}" for name, row in section["variants"].items())
        )
        if section["control_warning"]:
            print(section["control_warning"])
    machine["load_average_after"] = load_average()
    result["machine"] = machine
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
