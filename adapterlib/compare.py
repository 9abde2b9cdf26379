"""The comparison grid: every method at several sizes and seeds, summarised as a table and a chart.

Accuracy is reported as the mean over seeds with two 95% intervals: the spread between seeds
(Student's t with ``seeds - 1`` degrees of freedom) and the sampling error of an 872-example
validation set (normal approximation of a binomial proportion, about +-2.4 points at 85%).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .methods import ByName, get_method, method_names
from .train import DEFAULT_POOLING, Recipe

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
METHOD_LABELS = ByName("label")  # views of the registry, baselines first, read at each lookup
MARKERS = ByName("marker")
SIDEWAYS = 0.03  # log10 units between neighbouring methods in the comparison chart


def counted(number: float, noun: str) -> str:
    """``1 epoch``, ``2 epochs``, ``0.5 epochs``: a number and its noun, plural unless it is one."""
    return f"{number:g} {noun}" if number == 1 else f"{number:g} {noun}s"


def percent(fraction: float) -> str:
    """``0.34%``: two decimals, or one significant digit below 0.01% (``0.003%``, not ``0.00%``)."""
    return f"{100 * fraction:.2f}%" if fraction >= 1e-4 else f"{100 * fraction:.1g}%"


def variant_name(record: dict[str, Any]) -> str:
    """``adapter r=16``, ``prefix n=20``, ``full``: one name per point of the chart."""
    name, options = record["method"], record["recipe"]["method_options"]
    size = get_method(name).size if name in method_names() else None
    if size is None or size.field not in options:
        return name
    return f"{name} {size.symbol}={options[size.field]}"


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: mean accuracy over seeds, spread, intervals, parameters, time."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(variant_name(record), []).append(record)
    rows = []
    for name, group in groups.items():
        accuracies = [100 * r["accuracy"] for r in group]
        mean = statistics.fmean(accuracies)
        sd = statistics.stdev(accuracies) if len(group) > 1 else 0.0
        n_eval = group[0]["evaluation_examples"]
        rows.append(
            {
                "variant": name,
                "method": group[0]["method"],
                "seeds": len(group),
                "accuracy_mean": mean,
                "accuracy_sd": sd,
                "ci95_seeds": T_975.get(len(group) - 1, 1.96) * sd / math.sqrt(len(group))
                if len(group) > 1
                else None,
                "ci95_sampling": 196 * math.sqrt(mean / 100 * (1 - mean / 100) / n_eval),
                "trainable_parameters": group[0]["trainable_parameters"],
                "trainable_fraction": group[0]["trainable_fraction"],
                "learning_rate": group[0]["recipe"]["learning_rate"],
                "seconds_per_step": statistics.median(r["seconds_per_step"] for r in group),
                "train_seconds": statistics.median(r["train_seconds"] for r in group),
            }
        )
    return sorted(rows, key=lambda row: row["trainable_parameters"])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | trainable | fraction | val. acc. (mean ± sd) | 95% CI seeds | 95% CI sampling | lr | "
        "s/step | train s |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        seeds_ci = f"±{row['ci95_seeds']:.1f}" if row["ci95_seeds"] is not None else "n/a"
        lines.append(
            f"| {row['variant']} | {row['trainable_parameters']:,} | {percent(row['trainable_fraction'])} | "
            f"{row['accuracy_mean']:.1f} ± {row['accuracy_sd']:.1f}% ({counted(row['seeds'], 'seed')}) | {seeds_ci} | "
            f"±{row['ci95_sampling']:.1f} | {row['learning_rate']:g} | {row['seconds_per_step']:.2f} | "
            f"{row['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list[dict[str, Any]], ax=None):
    """Validation accuracy against trainable parameters (log x), one marker per method, with both 95%
    intervals: the spread between seeds (thick bars) and the validation set's sampling error (thin bars).

    PEFT methods of equal size (the adapter and the parallel adapter at the same r, LoRA and DoRA)
    would hide each other, so each one's points are shifted sideways by a few percent of their x."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 5))
    drawn = [method for method in METHOD_LABELS if any(row["method"] == method for row in rows)]
    peft = [method for method in drawn if method in method_names()]  # the baselines stand alone
    for method in drawn:
        points = [row for row in rows if row["method"] == method]
        shift = 10 ** (SIDEWAYS * (peft.index(method) - (len(peft) - 1) / 2)) if method in peft else 1.0
        x, y = [shift * p["trainable_parameters"] for p in points], [p["accuracy_mean"] for p in points]
        seeds = ax.errorbar(
            x,
            y,
            yerr=[p["ci95_seeds"] or 0 for p in points],
            marker=MARKERS[method],
            markersize=8,
            elinewidth=4,
            linestyle="-" if len(points) > 1 else "none",
            label=METHOD_LABELS[method],
        )
        colour = seeds.lines[0].get_color()
        ax.errorbar(
            x, y, yerr=[p["ci95_sampling"] for p in points], fmt="none", elinewidth=1, capsize=4, color=colour
        )
        for p, xp, yp in zip(points, x, y):
            size = p["variant"].removeprefix(method).strip()  # "r=16": the legend names the method
            if size:
                ax.annotate(
                    size, (xp, yp), textcoords="offset points", xytext=(5, 5), fontsize=7, color=colour
                )
    ax.set(
        xscale="log",
        xlabel="trainable parameters (log scale; methods shifted sideways to stay apart)",
        ylabel="SST-2 validation accuracy (%)",
        title="Accuracy vs trainable parameters (mean over seeds)\n"
        "95% intervals: thick, over seeds; thin, sampling of the validation set",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    ax.figure.tight_layout()
    return ax


def learning_rate_curves(records: Iterable[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """``{method: [(learning rate, accuracy %), ...]}`` from the tuning-slice runs that used each
    method's default configuration (the default PEFT config and pooling; only the rate varies)."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        default = Recipe(record["method"]).peft_config_dict()
        if record["recipe"]["pooling"] != DEFAULT_POOLING or record["peft_config"] != default:
            continue
        curves.setdefault(record["method"], []).append(
            (record["recipe"]["learning_rate"], 100 * record["accuracy"])
        )
    return {method: sorted(points) for method, points in curves.items()}


def plot_learning_rates(curves: dict[str, list[tuple[float, float]]], defaults: dict[str, float], ax=None):
    """Tuning-slice accuracy against learning rate (log x), the default of each method circled."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    for method, label in METHOD_LABELS.items():
        if method not in curves:
            continue
        rates, accuracies = zip(*curves[method])
        (line,) = ax.plot(rates, accuracies, marker="o", label=label)
        if defaults.get(method) in rates:
            chosen = rates.index(defaults[method])
            ax.plot(
                rates[chosen],
                accuracies[chosen],
                marker="o",
                markersize=14,
                fillstyle="none",
                color=line.get_color(),
            )
    ax.set(
        xscale="log",
        xlabel="learning rate (log scale)",
        ylabel="tuning-slice accuracy (%)",
        title="Learning-rate sensitivity (1 seed; circles: the defaults)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return ax


def write_results(records: list[dict[str, Any]], out: Path, command: str) -> list[dict[str, Any]]:
    """``results.json``, ``results.md`` and ``comparison.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summarize(records)
    out.mkdir(parents=True, exist_ok=True)
    environment = records[0]["versions"] | {"device": records[0]["device"]} if records else {}
    (out / "results.json").write_text(
        json.dumps(
            {"command": command, "environment": environment, "summary": rows, "runs": records}, indent=2
        )
        + "\n"
    )
    (out / "results.md").write_text(f"Command: `{command}`\n\n" + markdown_table(rows))
    ax = plot_comparison(rows)
    ax.figure.savefig(out / "comparison.png", dpi=120)
    plt.close(ax.figure)
    return rows


def run_grid(
    recipes: Iterable[Recipe], seeds: Iterable[int], train: Callable[[Recipe], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Train every recipe with every seed; ``train`` maps a recipe to its result record."""
    records = []
    for recipe in recipes:
        for seed in seeds:
            record = train(Recipe(**{**recipe.__dict__, "seed": seed}))
            records.append(record)
            print(f"{variant_name(record)} seed {seed}: {100 * record['accuracy']:.2f}%", flush=True)
    return records
