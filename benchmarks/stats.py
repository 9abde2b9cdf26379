"""What the benchmarks share: ratios of timings with a bootstrap interval, and the facts of the machine.

A benchmark runs in *rounds*: every variant once per round, in a fresh random order. Round ``i``
gives each variant a time ``t_v[i]``, and the ratio of a variant to the baseline in that round is
``q[i] = t_v[i] / t_base[i]``. The reported ratio is the median of the per-round ratios,
``median_i q[i]``, rather than the ratio of the two medians: both times of a round were taken
seconds apart, so a slow drift of a shared machine (another job starting, the clock throttling)
scales both and cancels in ``q[i]``, and the median ignores the odd round that another process
interrupted.

Its 95% interval is a paired percentile bootstrap: draw ``n`` rounds with replacement from the
``n`` measured (whole rounds, so the pairing is kept), take the median of their ratios, repeat
10,000 times; the interval runs from the 2.5th to the 97.5th percentile of those medians.

The control is the baseline timed twice under two names. Its ratio is 1 by construction, so its
interval shows how finely this machine, at this number of rounds, can tell two variants apart:
when it excludes 1 or reaches beyond +-3%, a 5% difference elsewhere cannot be trusted.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

RESAMPLES = 10_000
CONTROL_TOLERANCE = 0.03
# CPU features that decide which matrix kernels PyTorch can use (bf16 dot products, AMX tiles).
SPEED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


class Ratio(NamedTuple):
    """A ratio of times with its bootstrap interval ``[low, high]``."""

    ratio: float
    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def paired_ratio(
    variant: Sequence[float],
    baseline: Sequence[float],
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Ratio:
    """Median of the per-round ratios ``variant[i] / baseline[i]``, with a paired bootstrap interval."""
    if len(variant) != len(baseline) or len(variant) == 0:
        raise ValueError(
            f"need the same non-zero number of rounds for both, got {len(variant)} and {len(baseline)}"
        )
    ratios = np.asarray(variant, dtype=float) / np.asarray(baseline, dtype=float)
    rounds = np.random.default_rng(seed).integers(0, len(ratios), size=(resamples, len(ratios)))
    medians = np.median(ratios[rounds], axis=1)
    low, high = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return Ratio(float(np.median(ratios)), float(low), float(high))


def control_warning(control: Ratio, tolerance: float = CONTROL_TOLERANCE) -> str | None:
    """None when the control's interval contains 1 and lies within ``1 +- tolerance``; else the warning to print."""
    if control.contains(1.0) and control.low >= 1 - tolerance and control.high <= 1 + tolerance:
        return None
    return (
        f"WARNING: the control (base vs base-again) measured {control.ratio:.3f} [{control.low:.3f}, "
        f"{control.high:.3f}]; "
        f"its interval should contain 1.00 and stay within +-{tolerance:.0%}. The machine was too noisy for "
        "differences "
        "of about 5%: rerun on an idle machine or with more rounds."
    )


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`SPEED_FLAGS` it has (from ``/proc/cpuinfo`` on Linux)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        lines = open("/proc/cpuinfo", encoding="utf-8").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return model, [flag for flag in SPEED_FLAGS if flag in flags]


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the system does not report them)."""
    try:
        return [round(load, 2) for load in os.getloadavg()]
    except OSError:
        return None


def machine_facts() -> dict[str, object]:
    """CPU, GPU and software facts that decide the speed of a run; the load average is taken now."""
    cpu, flags = cpu_model_and_flags()
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": load_average(),
    }
