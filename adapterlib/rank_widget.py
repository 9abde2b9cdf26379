"""Notebook 8's figures and its rank explorer, drawn from the files :mod:`adapterlib.rank_study` writes.

:class:`RankResults` reads ``results/rank/*.json`` (the committed results of this repository) or the
folder of another run. :class:`RankExplorer` is one slider for the rank ``r`` and a table of what that
rank means four ways: LoRA's trainable fraction (closed form, :mod:`adapterlib.counting`), the share of
the fine-tuning update's energy that rank ``r`` keeps (from the stored singular values), the accuracy
of full fine-tuning with its update cut to rank ``r``, and LoRA's accuracy at rank ``r``. The slider
steps through 0, the powers of two and the ranks half-way between them on a log2 scale (3, 6, 12, ...)
up to full rank. Accuracies exist only at the ranks the study trained or evaluated; between two of
them the table shows a value interpolated linearly in :math:`\\log_2 r` and says so.

A small run (one seed, a few ranks, a tiny model) lacks some pieces; a figure then leaves them out
and says which, instead of failing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import display
from transformers import AutoConfig

from .counting import bert_parameter_count, expected_trainable_parameters
from .methods.lora import LoraConfig
from .modeling import model_location
from .rank_study import FULL, MATRICES, QUERY_VALUE

RESULTS = Path(__file__).resolve().parents[1] / "results" / "rank"
SHORT_NAMES = {
    "attention.self.query": "query",
    "attention.self.key": "key",
    "attention.self.value": "value",
    "attention.output.dense": "attention output",
    "intermediate.dense": "FFN in",
    "output.dense": "FFN out",
}
TARGETS = {"query,value": QUERY_VALUE, "all": MATRICES}
TARGET_LABELS = {"query,value": "query and value", "all": "all six matrices"}


@dataclass
class RankResults:
    """The study's five result files."""

    study: dict
    spectra: dict
    truncation: dict
    lora: dict
    similarity: dict

    @classmethod
    def load(cls, folder: str | Path = RESULTS) -> RankResults:
        """The files in ``folder``: by default the committed ``results/rank`` of this repository,
        else the ``--out`` folder of your own run (a relative path is read from the current
        directory, which in a notebook is the notebook's folder)."""
        folder = Path(folder)
        names = ("study", "spectra", "truncation", "lora", "similarity")
        missing = [n for n in names if not (folder / f"{n}.json").is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} lacks {', '.join(f'{n}.json' for n in missing)}; write them with "
                f"`python -m adapterlib.rank_study --out {folder}`."
            )
        return cls(**{n: json.loads((folder / f"{n}.json").read_text()) for n in names})

    @property
    def full_rank(self) -> int:
        """The rank of an untruncated update: the smaller side of every matrix (all have the same)."""
        return len(self.spectra["singular_values"][MATRICES[0]][0])

    def singular_values(self, matrix: str, layer: int) -> np.ndarray:
        return np.array(self.spectra["singular_values"][matrix][layer])

    def energy(self, r: int, names: tuple[str, ...] = QUERY_VALUE) -> float:
        r"""The share of :math:`\sum \|\Delta W\|_F^2` over every layer's ``names`` matrices that
        keeping rank ``r`` in each of them keeps."""
        spectra = [
            self.singular_values(n, layer) ** 2 for n in names for layer in range(self.spectra["layers"])
        ]
        return sum(s[:r].sum() for s in spectra) / sum(s.sum() for s in spectra)

    def truncation_accuracy(self, targets: str) -> dict[int, float]:
        """``{rank: accuracy in %}`` for one set of truncated matrices; full rank under its number."""
        return {
            self.full_rank if run["r"] == FULL else run["r"]: 100 * run["accuracy"]
            for run in self.truncation["runs"]
            if run["targets"] == targets
        }

    def lora_rows(self) -> dict[int, dict]:
        """``{rank: summary row}``: mean accuracy over seeds (%) and its 95% intervals (points)."""
        return {row["r"]: row for row in self.lora["summary"]}


def interpolate(points: dict[int, float], r: int) -> tuple[float | None, str]:
    """The value at ``r`` and how it was found: measured, interpolated linearly in log2 r between
    the two nearest measured ranks, or not measured (outside them)."""
    if r in points:
        return points[r], "measured"
    below = [p for p in points if 0 < p < r]
    above = [p for p in points if p > r]
    if not below or not above:
        return None, f"not measured beyond r={max(points)}" if not above else "not measured"
    low, high = max(below), min(above)
    t = (math.log2(r) - math.log2(low)) / (math.log2(high) - math.log2(low))
    return points[low] + t * (points[high] - points[low]), f"interpolated between r={low} and r={high}"


def left_out(what: str, why: str) -> None:
    """Say that a piece of the figure is missing from these results, and why."""
    print(f"left out: {what} ({why})")


def slider_ranks(results: RankResults) -> list[int]:
    """0, the powers of two and the ranks half-way between them on a log2 scale (3, 6, 12, ...),
    the measured ranks and full rank: every rank the explorer offers."""
    full = results.full_rank
    powers = [2**k for k in range(full.bit_length())]
    measured = set(results.truncation_accuracy("all")) | set(results.lora_rows())
    return sorted(
        {r for r in {0, full, *powers, *(p + p // 2 for p in powers if p > 1), *measured} if r <= full}
    )


def model_shape(results: RankResults):
    """The config of the model the study fine-tuned (shapes only, no weights)."""
    return AutoConfig.from_pretrained(model_location(results.study["full_record"]["model"]))


def lora_fraction(model_config, r: int) -> float:
    """LoRA's trainable share on query and value at rank ``r``, as training counts it: LoRA and the
    head's trainable copy, of the model with mean pooling (no pooler) and both heads."""
    trainable = expected_trainable_parameters(model_config, LoraConfig(r=r), num_labels=2)
    return trainable / (bert_parameter_count(model_config, 2, pooler=False) + trainable)


# ---------------------------------------------------------------- figures


def plot_spectra(results: RankResults, layer: int | None = None):
    """Singular values of every update, one panel per matrix, one line per layer (log y)."""
    figure, axes = plt.subplots(1, len(MATRICES), figsize=(16, 3.4), sharey=True)
    layers = range(results.spectra["layers"]) if layer is None else [layer]
    for ax, name in zip(axes, MATRICES):
        for index in layers:
            values = results.singular_values(name, index)
            color = plt.cm.viridis(index / max(results.spectra["layers"] - 1, 1))
            ax.plot(np.arange(1, len(values) + 1), values, color=color, label=f"layer {index}")
        ax.set(xscale="log", yscale="log", title=SHORT_NAMES[name], xlabel="index i")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(r"singular value $\sigma_i$ of $\Delta W$")
    axes[-1].legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_energy(results: RankResults, energy: Callable[[torch.Tensor, int], float]):
    """Share of each matrix's update energy that rank r keeps, ``energy(singular_values, r)``, as
    the mean over the layers."""
    ranks = np.unique(np.geomspace(1, results.full_rank, 40).astype(int))
    figure, ax = plt.subplots(figsize=(7, 4))
    for name in MATRICES:
        spectra = [
            torch.tensor(results.singular_values(name, layer)) for layer in range(results.spectra["layers"])
        ]
        shares = [
            np.mean([float(energy(s.clone(), r)) for s in spectra]) for r in ranks
        ]  # a copy for every call
        ax.plot(ranks, 100 * np.array(shares), label=SHORT_NAMES[name])
    for r in (1, 8, 64):
        ax.axvline(r, color="grey", linewidth=0.5)
    ax.set(
        xscale="log",
        xlabel="rank r",
        ylabel="share of ||ΔW||² kept (%)",
        ylim=(0, 100),
        title=f"Energy of the update kept by rank r (mean over the {results.spectra['layers']} layers)",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def plot_accuracy(results: RankResults, r: int | None = None, ax=None):
    """Validation accuracy against r: full fine-tuning truncated (two sets of matrices), LoRA trained
    at each r (mean of the seeds, 95% interval over seeds); r = 0 drawn at the left edge. With ``r``
    given, a vertical line there and, where ``r`` was not measured, a hollow marker at the interpolated value."""
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    edge = 0.5  # where r = 0 sits on the log axis
    rows = results.lora_rows()
    seeds = rows[min(rows)]["seeds"]
    series = [
        (f"full fine-tuning, {TARGET_LABELS[t]} truncated to rank r", m, results.truncation_accuracy(t), None)
        for t, m in (("query,value", "o"), ("all", "s"))
    ]
    interval = ", bars: 95% interval over seeds" if seeds > 1 else ""
    series.append(
        (
            f"LoRA on query and value, trained at rank r ({seeds} seeds{interval})",
            "^",
            {k: row["accuracy_mean"] for k, row in rows.items()},
            {k: row["ci95_seeds"] for k, row in rows.items()} if seeds > 1 else None,
        )
    )
    for label, marker, points, spread in series:
        ranks = sorted(points)
        line = ax.errorbar(
            [k or edge for k in ranks],
            [points[k] for k in ranks],
            marker=marker,
            capsize=3,
            yerr=None if spread is None else [spread[k] for k in ranks],
            label=label,
        )
        value, how = interpolate(points, r) if r else (None, "")
        if how.startswith("interpolated"):
            ax.plot(r, value, marker=marker, markersize=11, fillstyle="none", color=line.lines[0].get_color())
    if r is not None:
        ax.axvline(r or edge, color="black", linewidth=0.8, label=f"r = {r} (hollow: interpolated)")
    ticks = sorted({k for _, _, points, _ in series for k in points} | {0, results.full_rank})
    ax.set_xscale("log")
    ax.set_xticks(
        [k or edge for k in ticks], [f"{k}\n(full)" if k == results.full_rank else str(k) for k in ticks]
    )
    ax.minorticks_off()
    ax.set(xlabel="rank r", ylabel="SST-2 validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return ax


def plot_similarity_grids(results: RankResults, layer: int | None = None, side: str = "input"):
    """Hu et al.'s Figure 3 for one layer (the last by default): φ(i, j) between LoRA at the two
    ranks, and our extension, between LoRA at the smaller rank and full fine-tuning, for query and value."""
    small, large = results.similarity["ranks"]
    layer = results.spectra["layers"] - 1 if layer is None else layer
    if not 0 <= layer < results.spectra["layers"]:
        raise ValueError(f"layer {layer}: these results have layers 0 to {results.spectra['layers'] - 1}")
    figure, axes = plt.subplots(2, 2, figsize=(12, 5), sharex=True, sharey=True, layout="constrained")
    for row, pair in enumerate((f"lora{small}_lora{large}", f"lora{small}_full")):
        for column, name in enumerate(QUERY_VALUE):
            grid = np.array(results.similarity["grids"][f"{layer}.{name}.{side}"][pair])
            image = axes[row, column].imshow(
                grid, vmin=0, vmax=1, aspect="auto", cmap="magma", extent=(0.5, large + 0.5, small + 0.5, 0.5)
            )
            other = f"LoRA r={large}" if "full" not in pair else "full fine-tuning"
            axes[row, column].set(
                title=f"layer {layer} {SHORT_NAMES[name]}: LoRA r={small} vs {other}",
                ylabel="i" if column == 0 else None,
                xlabel="j" if row == 1 else None,
            )
    figure.colorbar(image, ax=axes, label="φ(i, j)")
    return figure


def plot_similarity_diagonals(results: RankResults, side: str = "input"):
    """φ(i, i) against i, every layer: LoRA at the larger rank across two seeds, and against full
    fine-tuning; the dashed line is the expectation for random subspaces, i / n."""
    _, large = results.similarity["ranks"]
    n = results.similarity["dimension"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
    i = np.arange(1, large + 1)
    labelled = False  # the legend names the lines of the first panel drawn
    for ax, pair, title in (
        (axes[0], f"lora{large}_seeds", f"LoRA r={large}, seed 0 vs seed 1"),
        (axes[1], f"lora{large}_full", f"LoRA r={large} vs full fine-tuning"),
    ):
        if pair not in results.similarity["diagonals"][f"0.{QUERY_VALUE[0]}.{side}"]:
            left_out(
                title, "these results have no seed 1: the study compares two seeds when --seeds includes 1"
            )
            ax.text(0.5, 0.5, "not in these results", ha="center", transform=ax.transAxes)
            ax.set(title=title, ylim=(0, 1))
            continue
        for layer in range(results.spectra["layers"]):
            for name, style in zip(QUERY_VALUE, ("-", ":")):
                values = results.similarity["diagonals"][f"{layer}.{name}.{side}"][pair]
                ax.plot(
                    i,
                    values,
                    style,
                    color=plt.cm.viridis(layer / max(results.spectra["layers"] - 1, 1)),
                    label=None if labelled else f"layer {layer} {SHORT_NAMES[name]}",
                )
        ax.plot(i, i / n, "k--", label=None if labelled else "random subspaces (i / n)")
        ax.set(xscale="log", xlabel="i (top directions of each)", title=title, ylim=(0, 1))
        ax.grid(alpha=0.3)
        labelled = True
    axes[0].set_ylabel("φ(i, i)")
    figure.legend(loc="center right", fontsize=7)
    figure.tight_layout(rect=(0, 0, 0.86, 1))
    return figure


# ---------------------------------------------------------------- the explorer


class RankExplorer:
    """One slider for r (the ranks :func:`slider_ranks` gives); the table :meth:`rows` gives and the
    accuracy figure with r marked."""

    def __init__(self, results: RankResults | None = None, r: int = 8) -> None:
        self.results = results or RankResults.load()
        self.model_config = model_shape(self.results)
        ranks = slider_ranks(self.results)
        self.slider = widgets.SelectionSlider(
            options=[(str(k), k) for k in ranks],
            value=r if r in ranks else ranks[0],
            description="r",
            layout=widgets.Layout(width="600px"),
        )
        self.table = widgets.HTML()
        self.plot = widgets.Output()
        self.slider.observe(self.update, names="value")
        self.update()

    def rows(self, r: int) -> list[tuple[str, str, str]]:
        """``(quantity, value, how it was obtained)`` at rank ``r``."""
        fraction = (
            ("–", "r = 0 is no LoRA")
            if r == 0
            else (f"{100 * lora_fraction(self.model_config, r):.3f}%", "closed form")
        )
        rows = [("LoRA trainable fraction (query, value, with the head)", *fraction)]
        for targets, names in TARGETS.items():
            rows.append(
                (
                    f"energy of ΔW kept, {TARGET_LABELS[targets]}",
                    f"{100 * self.results.energy(r, names):.1f}%",
                    "from the singular values",
                )
            )
        for targets in TARGETS:
            value, how = interpolate(self.results.truncation_accuracy(targets), r)
            rows.append(
                (
                    f"full fine-tuning, {TARGET_LABELS[targets]} truncated to rank r",
                    "–" if value is None else f"{value:.1f}%",
                    how,
                )
            )
        lora = self.results.lora_rows()
        seeds = lora[min(lora)]["seeds"]
        value, how = (
            (None, "r = 0 is no LoRA")
            if r == 0
            else interpolate({k: row["accuracy_mean"] for k, row in lora.items()}, r)
        )
        spread = lora[r]["ci95_seeds"] if r in lora else None
        if spread is not None:
            how += f"; ± is the 95% interval over the {seeds} seeds"
        shown = "–" if value is None else f"{value:.1f}%" + ("" if spread is None else f" ± {spread:.1f}")
        rows.append((f"LoRA trained at rank r (mean of {seeds} seed{'s' if seeds > 1 else ''})", shown, how))
        return rows

    def update(self, change=None) -> None:
        r = self.slider.value
        cells = "".join(
            f"<tr><td>{q}</td><td style='text-align:right'>{v}</td><td><i>{h}</i></td></tr>"
            for q, v, h in self.rows(r)
        )
        self.table.value = f"<table><tr><th>at r = {r}</th><th>value</th><th>how</th></tr>{cells}</table>"
        with self.plot:
            self.plot.clear_output(wait=True)
            ax = plot_accuracy(self.results, r)
            display(ax.figure)
            plt.close(ax.figure)

    def widget(self) -> widgets.Widget:
        return widgets.VBox([self.slider, self.table, self.plot])
