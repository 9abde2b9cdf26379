"""``torchrun --nproc_per_node 2 -m adapterlib train ...`` trains one model in two processes.

Two CPU processes (gloo) train a tiny random BERT on 64 hand-made sentences with a global batch
of 8 and score 256 others. A small launcher script runs the real command line in each process and records, per
process, every example its model saw in training and in evaluation, and the trained weights.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from adapterlib.cli import main
from conftest import tiny_train_argv, write_tiny_model, write_tiny_sst2

WORKER = textwrap.dedent('''
    """One process of the two: the real command line, watched."""
    import json, os, sys
    import torch
    import adapterlib.train as train
    from adapterlib.cli import main

    rank, seen = int(os.environ.get("RANK", 0)), {"train": [], "evaluate": [], "logs": []}
    prepare_model, train_run, log = train.prepare_model, train.train_run, train.Trainer.log

    def log_and_keep(trainer, logs, *args, **kwargs):
        seen["logs"].append(dict(logs))
        return log(trainer, logs, *args, **kwargs)

    train.Trainer.log = log_and_keep

    def watch(module, args, kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        rows = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
        seen["train" if module.training else "evaluate"].append(rows)

    def prepare_and_watch(*args):
        model = prepare_model(*args)
        model.register_forward_pre_hook(watch, with_kwargs=True)
        torch.save({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, f"initial{rank}.pt")
        return model

    def train_and_keep(*args, **kwargs):
        model, record = train_run(*args, **kwargs)
        torch.save({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}, f"trained{rank}.pt")
        json.dump({"seen": seen, "record": record}, open(f"seen{rank}.json", "w"))
        return model, record

    train.prepare_model, train.train_run = prepare_and_watch, train_and_keep
    sys.exit(main(sys.argv[1:]))
''')


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Run the launcher under torchrun once; return its folder and per-process observations."""
    return launched_run(tmp_path_factory.mktemp("ddp"), processes=2)


def launched_run(folder, processes: int):
    """The launcher in ``processes`` processes (torchrun for more than one): its folder, the
    observations of each process, and its stdout."""
    model_dir = write_tiny_model(folder / "model")
    data_dir = write_tiny_sst2(folder / "data", train=64, dev=256)
    (folder / "worker.py").write_text(WORKER)
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    # "--" ends torchrun's own options, which it would otherwise also look for among the script's
    # ("--r" is ambiguous with its --rdzv-*, --role, --run-path).
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "worker.py", "--"]
    command = [
        sys.executable,
        *(launcher if processes > 1 else ["worker.py"]),
        *tiny_train_argv("adapter", model_dir, data_dir, "out", "--r", "4", "--batch-size", "8"),
    ]
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = [json.loads((folder / f"seen{rank}.json").read_text()) for rank in range(processes)]
    return folder, runs, done.stdout


def as_examples(batches):
    return [tuple(row) for batch in batches for row in batch]


def test_each_process_trains_on_its_own_share_of_every_global_batch(two_process_run):
    _, runs, _ = two_process_run
    batches = [run["seen"]["train"] for run in runs]
    assert [len(b) for b in batches] == [8, 8]  # 64 examples / global batch 8 = 8 steps, in both processes
    assert all(len(batch) == 4 for b in batches for batch in b)  # 8 / 2 processes
    first, second = (as_examples(b) for b in batches)
    assert len(set(first)) == 32 and len(set(second)) == 32 and not set(first) & set(second)
    assert all(run["record"]["train_examples"] == 64 and run["record"]["processes"] == 2 for run in runs)


def test_evaluation_is_shared_and_gathered(two_process_run):
    _, runs, _ = two_process_run
    first, second = (as_examples(run["seen"]["evaluate"]) for run in runs)
    assert len(first) == len(set(first)) == len(second) == len(set(second)) == 128  # 256 / 2, batches of 64
    assert not set(first) & set(second)
    assert runs[0]["record"]["accuracy"] == runs[1]["record"]["accuracy"]
    assert runs[0]["record"]["evaluation_examples"] == 256


def test_trained_parameters_are_equal_across_processes_and_changed(two_process_run):
    folder, _, _ = two_process_run
    trained = [torch.load(folder / f"trained{rank}.pt") for rank in (0, 1)]
    initial = torch.load(folder / "initial0.pt")
    assert trained[0].keys() == trained[1].keys() == initial.keys()
    assert all(torch.equal(trained[0][name], trained[1][name]) for name in initial)
    assert any(not torch.equal(trained[0][name], initial[name]) for name in initial)


def test_the_logged_loss_and_gradient_norm_are_those_of_one_process(two_process_run, tmp_path):
    """The same global batches in one process log about the same first loss and gradient norm:
    the loss is a batch mean, not multiplied by the number of processes (dropout and the order of
    examples differ, hence the tolerance; a factor of 2 is far outside it)."""
    _, runs, _ = two_process_run
    _, (alone,), _ = launched_run(tmp_path, processes=1)
    two, one = (next(log for log in run["seen"]["logs"] if "loss" in log) for run in (runs[0], alone))
    assert two["loss"] == pytest.approx(one["loss"], rel=0.25)
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=0.25)


def test_only_the_first_process_writes(two_process_run):
    folder, _, stdout = two_process_run
    assert sorted(p.name for p in (folder / "out").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "metrics.json",
    ]
    assert json.loads((folder / "out" / "metrics.json").read_text())["processes"] == 2
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["data", "model", "out"]
    assert stdout.count("adapter: validation accuracy") == 1


def test_a_batch_that_does_not_split_over_the_processes_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    data = write_tiny_sst2(tmp_path / "data")
    assert (
        main(
            [
                "train",
                "--method",
                "head",
                "--batch-size",
                "7",
                "--data-dir",
                data,
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert "batch size 7 does not split evenly over 2 processes" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
