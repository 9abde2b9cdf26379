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


def thousands(count: float, _position=None) -> str:
    """``20k``, ``1.5M``: a parameter count short enough for a tick label."""
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.3g}{suffix}"
    return f"{count:g}"


def comparison_panels(methods_drawn: list[str]) -> dict[str, list[str]]:
    """``{panel title: [method, ...]}``: the methods drawn, grouped by family (:data:`plot_style.FAMILIES`)."""
    from .plot_style import family

    panels: dict[str, list[str]] = {}
    for method in methods_drawn:
        panels.setdefault(family(method), []).append(method)
    return panels


def plot_comparison(rows: list[dict[str, Any]], ax=None):
    """Validation accuracy against trainable parameters (log x), one panel per family of methods, with
    both 95% intervals: the spread between seeds (thick bars) and the validation set's sampling error
    (thin bars with caps). Full fine-tuning and the head alone are horizontal reference lines in every
    panel; each size (``r=16``) is written once under its points. Returns the figure.

    Methods of one family at equal size (the adapter and the parallel adapter at the same r, LoRA and
    DoRA) would hide each other, so each one's points are shifted sideways by a few percent of their x.
    ``ax``, where given, is replaced by the panels in its figure (which is resized to fit them)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    from .plot_style import DPI, FONT_SIZE, REFERENCE_STYLES, SIDEWAYS, family_order, style

    drawn_methods = [m for m in method_names() if any(row["method"] == m for row in rows)]
    panels = comparison_panels(family_order(drawn_methods)) or {
        "reference runs": ()
    }  # baselines alone: one panel
    columns = 2 if len(panels) > 1 else 1
    lines = math.ceil(len(panels) / columns)
    size = (9, 3.4 * lines + 1.9)
    if ax is None:
        figure = plt.figure(figsize=size, dpi=DPI, layout="constrained")
    else:
        figure = ax.figure
        figure.clear()
        figure.set_size_inches(size)
        figure.set_dpi(DPI)
        figure.set_layout_engine("constrained")
    axes = figure.subplots(lines, columns, sharex=True, sharey=True, squeeze=False).ravel()
    every_x = []
    references = {row["method"]: row for row in rows if row["method"] in REFERENCE_STYLES}
    for panel, (title, members) in zip(axes, panels.items()):
        for name, row in references.items():
            panel.axhline(row["accuracy_mean"], color=style(name).color, linestyle=style(name).linestyle)
        sizes: dict[str, list[tuple[float, float]]] = {}  # "r=16": (x, lowest bar end) of each point
        for index, method in enumerate(members):
            points = [row for row in rows if row["method"] == method]
            shift = 10 ** (SIDEWAYS * (index - (len(members) - 1) / 2))
            x, y = [shift * p["trainable_parameters"] for p in points], [p["accuracy_mean"] for p in points]
            every_x += x
            drawn = style(method)
            panel.errorbar(
                x,
                y,
                yerr=[p["ci95_seeds"] or 0 for p in points],
                **drawn.line() | {"linestyle": drawn.linestyle if len(points) > 1 else "none"},
                markersize=9,
                linewidth=2,
                elinewidth=5,
                gid=f"seeds {method}",
            )
            panel.errorbar(
                x,
                y,
                yerr=[p["ci95_sampling"] for p in points],
                fmt="none",
                elinewidth=1.2,
                capsize=5,
                color=drawn.color,
                gid=f"sampling {method}",
            )
            for p, xp, yp in zip(points, x, y):
                label = p["variant"].removeprefix(method).strip()  # "r=16": the legend names the method
                if label:
                    low = yp - max(p["ci95_sampling"], p["ci95_seeds"] or 0)
                    sizes.setdefault(label, []).append((xp, low))
        for label, ends in sizes.items():
            panel.annotate(
                label,
                (math.prod(x for x, _ in ends) ** (1 / len(ends)), min(low for _, low in ends)),
                xytext=(0, -4),
                textcoords="offset points",
                ha="center",
                va="top",
                fontsize=FONT_SIZE,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
                gid="size label",
            )
        panel.set_title(title, fontsize=FONT_SIZE)
        if panel in axes[len(panels) - columns : len(panels)]:  # the lowest panel of each column
            panel.set_xlabel("trainable parameters", fontsize=FONT_SIZE)
        panel.grid(alpha=0.3)
        panel.tick_params(labelsize=FONT_SIZE)
    for unused in axes[len(panels) :]:
        unused.remove()
    axes[0].set_xscale("log")
    if every_x:  # room for the size labels at both ends
        axes[0].set_xlim(min(every_x) / 1.4, max(every_x) * 1.4)
    axes[0].xaxis.set_major_locator(FixedLocator([m * 10**e for e in range(2, 9) for m in (1, 2, 5)]))
    axes[0].xaxis.set_major_formatter(FuncFormatter(thousands))
    axes[0].xaxis.set_minor_locator(NullLocator())
    bottom, top = axes[0].get_ylim()
    axes[0].set_ylim(bottom - 0.6, top)  # room for the size labels under the lowest bars
    handles = [
        Line2D([], [], markersize=9, linewidth=2, **style(m).line(), label=METHOD_LABELS[m])
        for members in panels.values()
        for m in members
    ] + [
        Line2D(
            [],
            [],
            color=style(name).color,
            linestyle=style(name).linestyle,
            label=f"{METHOD_LABELS[name]} ({thousands(row['trainable_parameters'])} trainable)",
        )
        for name, row in references.items()
    ]
    figure.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=FONT_SIZE, frameon=False)
    figure.supylabel("SST-2 validation accuracy (%)", fontsize=FONT_SIZE)
    figure.suptitle(
        "95% intervals: thick bars over seeds, thin bars sampling of the validation set", fontsize=FONT_SIZE
    )
    return figure


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
    """Tuning-slice accuracy against learning rate (log x), the default of each method circled; the
    legend sits under the axes, outside the data. Returns the axes."""
    import matplotlib.pyplot as plt

    from .plot_style import DPI, FONT_SIZE, style

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 6.5), dpi=DPI, layout="constrained")
    for method, label in METHOD_LABELS.items():
        if method not in curves:
            continue
        rates, accuracies = zip(*curves[method])
        drawn = style(method)
        ax.plot(rates, accuracies, **drawn.line(), markersize=9, linewidth=2, label=label)
        if defaults.get(method) in rates:
            chosen = rates.index(defaults[method])
            ax.plot(
                rates[chosen], accuracies[chosen], "o", markersize=20, fillstyle="none", color=drawn.color
            )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)", fontsize=FONT_SIZE)
    ax.set_ylabel("tuning-slice accuracy (%)", fontsize=FONT_SIZE)
    ax.set_title("Learning-rate sensitivity (1 seed; circles: the defaults)", fontsize=FONT_SIZE)
    ax.tick_params(labelsize=FONT_SIZE)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=FONT_SIZE, frameon=False)
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
    figure = plot_comparison(rows)
    figure.savefig(out / "comparison.png")
    plt.close(figure)
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
