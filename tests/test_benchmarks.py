"""The benchmarks' statistics, their interleaving and batching, and a CPU smoke run of the GPU epoch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_epoch  # noqa: E402
import speed  # noqa: E402
import stats  # noqa: E402


def drifting_times(rounds: int, noise: float, seed: int) -> np.ndarray:
    """Round times of a machine whose speed drifts threefold over the run, with multiplicative noise."""
    rng = np.random.default_rng(seed)
    drift = np.linspace(1.0, 3.0, rounds)
    return 0.5 * drift * (1 + noise * rng.standard_normal(rounds))


def test_identical_samples_give_exactly_one():
    times = drifting_times(20, noise=0.1, seed=0)
    ratio = stats.paired_ratio(times, times)
    assert ratio.contains(1.0)
    assert ratio.high - ratio.low < 0.01
    assert stats.control_warning(ratio) is None


def test_same_cost_under_drift_gives_narrow_interval_around_one():
    base = drifting_times(30, noise=0.1, seed=1)
    again = base * (1 + 0.01 * np.random.default_rng(2).standard_normal(30))
    ratio = stats.paired_ratio(again, base)
    assert ratio.contains(1.0)
    assert ratio.high - ratio.low < 0.03
    assert stats.control_warning(ratio) is None


def test_ten_percent_slower_variant_excludes_one():
    base = drifting_times(15, noise=0.1, seed=3)
    slower = 1.10 * base * (1 + 0.02 * np.random.default_rng(4).standard_normal(15))
    ratio = stats.paired_ratio(slower, base)
    assert ratio.low > 1.0
    assert ratio.contains(1.10)


def test_bootstrap_is_seeded_and_needs_paired_rounds():
    base = drifting_times(15, noise=0.1, seed=5)
    other = drifting_times(15, noise=0.1, seed=6)
    assert stats.paired_ratio(other, base, seed=7) == stats.paired_ratio(other, base, seed=7)
    with pytest.raises(ValueError, match="same non-zero number of rounds"):
        stats.paired_ratio(other[:10], base)


@pytest.mark.parametrize(
    "control, warns",
    [
        (stats.Ratio(1.0, 0.98, 1.02), False),
        (stats.Ratio(1.0, 0.95, 1.02), True),  # wider than 3% below
        (stats.Ratio(1.0, 0.99, 1.04), True),  # wider than 3% above
        (stats.Ratio(1.02, 1.01, 1.03), True),  # misses 1: one copy was systematically slower
    ],
)
def test_control_warning(control, warns):
    warning = stats.control_warning(control)
    assert (warning is not None) == warns
    if warns:
        assert "too noisy" in warning


def test_machine_facts():
    facts = stats.machine_facts()
    assert {"cpu", "cpu_flags", "torch", "torch_threads", "load_average_before"} <= facts.keys()
    assert set(facts["cpu_flags"]) <= set(stats.SPEED_FLAGS)
    assert facts["torch_threads"] >= 1


def test_interleaved_runs_every_variant_once_per_round_in_new_orders():
    calls = []
    steps = {name: (lambda item, name=name: calls.append((name, item))) for name in "abcd"}
    times = speed.interleaved(steps, inputs=list(range(12)))
    rounds = [calls[4 + 4 * i : 8 + 4 * i] for i in range(12)]  # after one warm-up call each
    assert all(sorted(name for name, _ in r) == list("abcd") for r in rounds)
    assert all({item for _, item in r} == {i} for i, r in enumerate(rounds))
    assert len({tuple(name for name, _ in r) for r in rounds}) > 1
    assert all(len(values) == 12 for values in times.values())


def test_summary_reports_paired_ratios():
    base = list(drifting_times(10, noise=0.05, seed=8))
    table = speed.summary({"base": base, "double": [2 * t for t in base]}, "base")
    assert table["rounds"] == 10
    assert table["variants"]["base"]["ratio"] == 1.0
    low, high = table["variants"]["double"]["ratio_ci95"]
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)


def test_length_grouped_batches_pad_each_batch_to_its_longest():
    rng = np.random.default_rng(9)
    lengths = rng.integers(3, 40, size=50)
    token_ids = [[7] * int(n) for n in lengths]
    batches = gpu_epoch.length_grouped_batches(token_ids, labels=list(range(50)), size=8, pad_id=0)
    assert sorted(int(i) for b in batches for i in b["labels"]) == list(range(50))
    for batch in batches:
        real = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(real.max())
        assert real.tolist() == [int(lengths[i]) for i in batch["labels"]]
        assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
    grouped = sum(b["input_ids"].numel() for b in batches)
    in_random_batches = sum(
        len(chunk) * chunk.max() for chunk in np.array_split(rng.permutation(lengths), range(8, 50, 8))
    )
    assert grouped < 1.2 * lengths.sum() < 0.8 * in_random_batches


def test_gpu_epoch_smoke_run_on_cpu(tmp_path):
    if not os.environ.get("ADAPTERLIB_SST2_DIR"):
        pytest.skip("ADAPTERLIB_SST2_DIR is not set: the epoch benchmark needs the SST-2 folder")
    out = tmp_path / "gpu_epoch.json"
    command = [
        sys.executable,
        str(BENCHMARKS / "gpu_epoch.py"),
        "--device",
        "cpu",
        "--train-size",
        "64",
        "--validation-size",
        "64",
        "--max-length",
        "32",
        "--batch-size",
        "32",
        "--out",
        str(out),
    ]
    # One thread: a smoke run, not a timing, and a shared CI machine makes two spinning threads far slower.
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=600, env=env)
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu")
    assert (
        result["batch_size"] == 32 and result["train_examples"] == 64 and result["validation_examples"] == 64
    )
    assert result["steps_per_epoch"] == 2
    assert result["precision"].startswith("bf16") and result["torch"]
    methods = result["methods"]
    assert set(methods) == {"adapter", "full"}
    for row in methods.values():
        assert row["epoch_s"] > 0
        assert row["examples_per_s"] == pytest.approx(64 / row["epoch_s"])
        assert 0.0 <= row["validation_accuracy"] <= 1.0
    assert methods["adapter"]["trainable_parameters"] < methods["full"]["trainable_parameters"] / 100


def test_warm_up_visits_each_batch_shape_once():
    token_ids = [[7] * n for n in (3, 3, 5, 5, 5, 9, 9, 2)]
    batches = gpu_epoch.length_grouped_batches(token_ids, labels=list(range(8)), size=2, pad_id=0)
    shapes = [tuple(b["input_ids"].shape) for b in gpu_epoch.one_batch_per_shape(batches)]
    assert sorted(shapes) == sorted({tuple(b["input_ids"].shape) for b in batches})
    assert len(shapes) == len(set(shapes))
