"""An interactive explorer: what each method's size costs in trainable parameters, and what the trained sizes measured.

``explorer()`` returns an ipywidgets box. Every count it shows comes from the closed forms the
method files state (:mod:`adapterlib.methods`), which the tests check against models built on
the ``meta`` device. Every registered method appears: one with a size gets a slider for it, one
without (BitFit trains the biases there are) trains a fixed count and gets none; every method gets
a control for each choice it declares (the adapter's placement, LoRA's targets). The same ``r``
means different things (and costs) in the adapter and in LoRA. For the BERT shapes the model is a
2-class ``BertForSequenceClassification``, pooler included (the head trains with every method);
the toy layer has no head.

Beside the costs the explorer shows what the comparison grid measured (``results/results.json``,
notebook 6): SST-2 validation accuracy, mean over seeds with its 95% interval over seeds. Those
runs trained MiniLM-L6 at each method's default choices, so a measurement is shown only where the
model and the choices match the run it comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.lines import Line2D
from transformers import BertConfig

from .compare import variant_name
from .config import PeftConfig
from .counting import (
    bert_parameter_count,
    head_parameter_count,
    layer_parameter_count,
    method_parameter_count,
)
from .methods import Method, get_baseline, get_method, method_names, methods
from .toy import ToyConfig

RESULTS = (
    Path(__file__).resolve().parents[1] / "results" / "results.json"
)  # beside adapterlib/, wherever Python runs
MEASURED_SHAPE = "MiniLM-L6 (packaged, d=384)"  # the model the comparison grid trains


def model_shapes() -> dict[str, object]:
    """The shapes to explore; configs only, no weights."""
    return {
        "toy TransformerLayer (d=128)": ToyConfig(),
        MEASURED_SHAPE: BertConfig(
            hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
        ),
        "BERT-base (d=768)": BertConfig(),
        "BERT-large (d=1024)": BertConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        ),
    }


@dataclass(frozen=True)
class Count:
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total


@dataclass(frozen=True)
class Measured:
    """One variant of the comparison grid: SST-2 validation accuracy (%), mean over ``seeds`` runs."""

    method: str  # a registered method's name, or "full" / "head"
    size: int | None  # the value of the method's size field; None without one
    settings: dict[str, Any]  # the PEFT config the runs trained with ({} for full and head)
    accuracy: float
    interval: float | None  # half-width of the 95% interval over seeds (None for a single seed)
    seeds: int

    def text(self) -> str:
        """``82.5 ± 2.0%``: the mean and its 95% interval over seeds."""
        spread = f" ± {self.interval:.1f}" if self.interval is not None else ""
        return f"{self.accuracy:.1f}{spread}%"


def measured_accuracies(path: Path = RESULTS) -> list[Measured]:
    """The ``summary`` rows of ``results.json``, each with the size and config its runs trained with."""
    if not path.is_file():
        raise FileNotFoundError(
            f"No measured accuracies: {path.parent.name}/{path.name} was not found beside the "
            "adapterlib package (the comparison grid writes it: adapterlib compare --out results)."
        )
    results = json.loads(path.read_text())
    settings = {variant_name(run): run["peft_config"] or {} for run in results["runs"]}
    rows = []
    for row in results["summary"]:
        config = settings.get(row["variant"], {})
        size = get_method(row["method"]).size if row["method"] in method_names() else None
        rows.append(
            Measured(
                row["method"],
                config.get(size.field) if size else None,
                config,
                row["accuracy_mean"],
                row["ci95_seeds"],
                row["seeds"],
            )
        )
    return rows


def same_setting(chosen: Any, trained: Any) -> bool:
    """Equal config values; a list of target names equals the same names in any order."""
    if isinstance(chosen, (list, tuple)) and isinstance(trained, (list, tuple)):
        return set(chosen) == set(trained)
    return chosen == trained


def seeds_label(measured: list[Measured]) -> str:
    """``3 seeds``, or ``2-3 seeds`` where the variants differ."""
    seeds = sorted({m.seeds for m in measured})
    return f"{seeds[0]} seed{'s' * (seeds[0] != 1)}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"


def base_parameter_count(shape) -> int:
    """The model before any method: the toy layers alone, or BERT with its 2-class head."""
    if isinstance(shape, ToyConfig):
        return shape.num_hidden_layers * layer_parameter_count(shape)
    return bert_parameter_count(shape, num_labels=2)


def count(shape, peft_config: PeftConfig) -> Count:
    """Trainable and total parameters of ``get_peft_model`` on this shape (2-class head for BERT)."""
    inserted = method_parameter_count(shape, peft_config)
    head = 0 if isinstance(shape, ToyConfig) else head_parameter_count(shape, 2)  # the head's trainable copy
    return Count(inserted + head, base_parameter_count(shape) + inserted + head)


def full_fine_tuning(shape) -> Count:
    total = base_parameter_count(shape)
    return Count(total, total)


def head_only(shape) -> Count:
    """The 2-class classifier alone trains (a BERT shape: the toy layer has no head)."""
    return Count(head_parameter_count(shape, 2), base_parameter_count(shape))


def size_limit(method: Method, shape) -> int:
    return method.size.explorer_max or shape.hidden_size


def choice_control(name: str, choices: tuple[str, ...], default) -> widgets.Widget:
    """A multiple choice for a tuple-valued field (LoRA's targets), else toggle buttons."""
    style = {"description_width": "initial"}
    if isinstance(default, tuple):
        return widgets.SelectMultiple(
            options=choices, value=default, rows=len(choices), description=name, style=style
        )
    return widgets.ToggleButtons(options=choices, value=default, description=name, style=style)


@dataclass(frozen=True)
class Row:
    """One line of the explorer's table: a method's cost here and what results/ measured for it."""

    label: str
    count: Count
    measured: str  # "83.6 ± 1.0%", or why there is no measurement ("not trained at this size")


class Explorer:
    """The controls, the live numbers and the plot; ``rows()`` is what the table shows."""

    def __init__(self, results: Path = RESULTS) -> None:
        self.shapes = model_shapes()
        self.shape = widgets.Dropdown(options=list(self.shapes), value=MEASURED_SHAPE, description="model")
        self.methods = {method.name: method for method in methods()}
        self.sizes: dict[str, widgets.IntSlider] = {}  # methods with a size only
        self.choices: dict[str, dict[str, widgets.Widget]] = {}
        for method in methods():
            default = method.config_class()
            if method.size is not None:
                self.sizes[method.name] = widgets.IntSlider(
                    value=getattr(default, method.size.field),
                    min=1,
                    max=1024,
                    description=f"{method.label} {method.size.symbol}",
                    style={"description_width": "initial"},
                )
            self.choices[method.name] = {
                field: choice_control(
                    f"{method.label} {field.replace('_', ' ')}", options, getattr(default, field)
                )
                for field, options in method.explorer_choices.items()
            }
        try:
            self.measured, self.missing = measured_accuracies(results), None
        except FileNotFoundError as error:
            self.measured, self.missing = [], str(error)
        self.table = widgets.HTML()
        self.plot = widgets.Output()
        self.controls = [
            self.shape,
            *self.sizes.values(),
            *(c for group in self.choices.values() for c in group.values()),
        ]
        for control in self.controls:
            control.observe(self.update, names="value")
        self.update()

    def config(self, name: str, size: int | None = None) -> PeftConfig:
        """Method ``name`` at the controls' settings, or at the size given."""
        method = self.methods[name]
        options = {field: control.value for field, control in self.choices[name].items() if control.value}
        if method.size is not None:
            options[method.size.field] = size or self.sizes[name].value
        return method.config_class(**options)

    def configs(self) -> dict[str, PeftConfig]:
        return {name: self.config(name) for name in self.methods}

    def counts(self) -> dict[str, Count]:
        """``{method label: count}`` at the controls' settings."""
        shape = self.shapes[self.shape.value]
        return {self.methods[name].label: count(shape, config) for name, config in self.configs().items()}

    def measured_here(self, name: str) -> list[Measured]:
        """The trained variants of ``name`` (a method, or "full" / "head") that match the model and the
        choices now set, at any size; none on a model the grid did not train."""
        if self.shape.value != MEASURED_SHAPE:
            return []
        fields = self.methods[name].explorer_choices if name in self.methods else {}
        config = self.config(name) if name in self.methods else None
        return [
            m
            for m in self.measured
            if m.method == name
            and all(same_setting(getattr(config, field), m.settings.get(field)) for field in fields)
        ]

    def measured_text(self, name: str) -> str:
        """The table's accuracy cell for ``name`` at the controls' settings, or why there is none."""
        if self.shape.value != MEASURED_SHAPE:
            return "trained on MiniLM-L6 only"
        method = self.methods.get(name)
        size = self.sizes[name].value if method is not None and method.size is not None else None
        if not [m for m in self.measured if m.method == name and m.size == size]:
            return "not trained at this size" if size is not None else "not trained"
        here = [m for m in self.measured_here(name) if m.size == size]
        return here[0].text() if here else "not trained with these choices"

    def rows(self) -> list[Row]:
        """Every method at the controls' settings, then the head alone (BERT shapes) and full fine-tuning."""
        shape = self.shapes[self.shape.value]
        rows = [
            Row(self.methods[name].label, count(shape, config), self.measured_text(name))
            for name, config in self.configs().items()
        ]
        if not isinstance(shape, ToyConfig):
            head = get_baseline("head")
            rows.append(Row(head.label, head_only(shape), self.measured_text(head.name)))
        full = get_baseline("full")
        return rows + [Row(full.label, full_fine_tuning(shape), self.measured_text(full.name))]

    def update(self, change=None) -> None:
        shape = self.shapes[self.shape.value]
        for name, slider in self.sizes.items():
            slider.max = size_limit(self.methods[name], shape)  # r never exceeds the hidden size
        self.table.value = table_html(self)
        with self.plot:
            self.plot.clear_output(wait=True)
            figure = draw_curves(self, shape)
            display(figure)
            plt.close(figure)

    def widget(self) -> widgets.Widget:
        return widgets.VBox([widgets.HBox([widgets.VBox(self.controls), self.table]), self.plot])


def table_html(explorer: Explorer) -> str:
    """The readout: trainable count and fraction per method, and the measured accuracy where results/ has one."""
    right = "style='text-align:right'"
    measured = bool(explorer.measured)
    header = ["method", "trainable", "fraction"] + ["measured accuracy"] * measured
    lines = [f"<tr>{''.join(f'<th>{h}</th>' for h in header)}</tr>"]
    for row in explorer.rows():
        accuracy = f"<td {right}>{row.measured}</td>" if measured else ""
        lines.append(
            f"<tr><td>{row.label}</td><td {right}>{row.count.trainable:,}</td>"
            f"<td {right}>{100 * row.count.fraction:.3f}%</td>{accuracy}</tr>"
        )
    if measured:
        note = (
            f"measured: SST-2 validation accuracy on MiniLM-L6, mean of {seeds_label(explorer.measured)} "
            "± the 95% interval over seeds (results/results.json)"
        )
    else:
        note = explorer.missing or "results/results.json lists no runs."
    return f"<table>{''.join(lines)}</table><p style='font-size:smaller'>{note}</p>"


def sizes_to_draw(limit: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit``, and ``limit`` itself."""
    steps = [m * 10**e for e in range(5) for m in (1, 2, 5)]
    return sorted({s for s in steps if s <= limit} | {limit})


def draw_curves(explorer: Explorer, shape):
    """Trainable fraction (left axis, log) against each method's size, one panel per kind of size (r,
    prefix length n), each slider's setting marked; a method without a size is a horizontal line.

    Where results/ has runs that match the model and choices, a second axis (right) shows their
    accuracy: a marker with its 95% interval over seeds at each trained size (ringed where the slider
    is), a method without a size at the panel's right edge, full fine-tuning and the head as lines.
    """
    panels: dict[str, list[Method]] = {}
    for method in explorer.methods.values():
        if method.size is not None:
            panels.setdefault(method.size.symbol, []).append(method)
    sizeless = [method for method in explorer.methods.values() if method.size is None]
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5.5 * len(panels), 4.4), squeeze=False, layout="constrained"
    )
    current = explorer.counts()
    colours = {name: f"C{i}" for i, name in enumerate(explorer.methods)}
    overlay = bool(explorer.measured) and explorer.shape.value == MEASURED_SHAPE
    for ax, (symbol, group) in zip(axes[0], panels.items()):
        for method in group:
            sizes = sizes_to_draw(size_limit(method, shape))
            fractions = [100 * count(shape, explorer.config(method.name, size)).fraction for size in sizes]
            ax.plot(sizes, fractions, color=colours[method.name], label=method.label)
            ax.plot(
                explorer.sizes[method.name].value,
                100 * current[method.label].fraction,
                "o",
                color=colours[method.name],
                markersize=9,
            )
        for method in sizeless:
            ax.axhline(
                100 * current[method.label].fraction,
                color=colours[method.name],
                linestyle=(0, (6, 3)),
                label=f"{method.label} (no size)",
            )
        ax.axhline(100, color="grey", linestyle="--", label="full fine-tuning (100%)")
        what = " / ".join(f"{method.label} {symbol}" for method in group)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel=what,
            ylabel="trainable parameters (%" + (", lines)" if overlay else ")"),
        )
        ax.grid(alpha=0.3)
        if overlay:
            right_edge = max(size_limit(method, shape) for method in group)
            accuracy = draw_measured(ax.twinx(), explorer, group, sizeless, right_edge, colours)
            accuracy.set_ylim(accuracy_range(explorer.measured))
    handles = {}
    for ax in figure.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if overlay:
        handles[f"measured (SST-2 validation, {seeds_label(explorer.measured)}), 95% interval over seeds"] = (
            Line2D([], [], color="black", marker="o", linestyle=":")
        )
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=4, fontsize=8)
    if explorer.missing:
        figure.suptitle(explorer.missing, fontsize=9)
    elif not overlay:
        figure.suptitle(f"Measured accuracies are for {MEASURED_SHAPE}: choose it to see them.", fontsize=9)
    else:
        figure.suptitle(
            "Cost and accuracy: lines, trainable parameters (left axis); "
            "markers, measured accuracy (right axis)",
            fontsize=9,
        )
    return figure


def accuracy_range(measured: list[Measured], margin: float = 0.5) -> tuple[float, float]:
    """Every measurement's interval, with a margin: one scale for all panels, whatever the controls."""
    low = min(m.accuracy - (m.interval or 0) for m in measured)
    high = max(m.accuracy + (m.interval or 0) for m in measured)
    return low - margin, high + margin


def draw_measured(
    ax,
    explorer: Explorer,
    group: list[Method],
    sizeless: list[Method],
    right_edge: int,
    colours: dict[str, str],
):
    """The accuracy axis of one panel (see :func:`draw_curves`)."""
    for method in group:
        points = sorted(explorer.measured_here(method.name), key=lambda m: m.size)
        if not points:
            continue
        bars = ax.errorbar(
            [p.size for p in points],
            [p.accuracy for p in points],
            yerr=[p.interval or 0 for p in points],
            color=colours[method.name],
            marker=method.marker,
            linestyle=":",
            capsize=3,
            markersize=6,
        )
        bars.lines[0].set_gid(f"measured {method.name}")
        for p in points:
            if p.size == explorer.sizes[method.name].value:
                ax.plot(p.size, p.accuracy, "o", color=colours[method.name], markersize=15, fillstyle="none")
    for i, method in enumerate(sizeless):
        for p in explorer.measured_here(method.name):
            x = right_edge * 1.2**i  # side by side at the right edge: there is no size to place them at
            bars = ax.errorbar(
                [x],
                [p.accuracy],
                yerr=[p.interval or 0],
                color=colours[method.name],
                marker=method.marker,
                capsize=3,
                markersize=6,
            )
            bars.lines[0].set_gid(f"measured {method.name}")
            ax.annotate(
                method.label,
                (x, p.accuracy),
                xytext=(-5, 5),
                textcoords="offset points",
                ha="right",
                fontsize=8,
            )
    for name, colour, style in (("full", "black", "-."), ("head", "dimgrey", ":")):
        for p in explorer.measured_here(name):
            ax.axhline(
                p.accuracy,
                color=colour,
                linestyle=style,
                label=f"{get_baseline(name).label}: measured",
                gid=f"measured {name}",
            )
            if p.interval:
                ax.axhspan(p.accuracy - p.interval, p.accuracy + p.interval, color=colour, alpha=0.07)
    ax.set_ylabel(f"measured accuracy (%, markers)\nSST-2 validation, {seeds_label(explorer.measured)}")
    return ax


def explorer() -> widgets.Widget:
    """The explorer, ready to display in JupyterLab."""
    return Explorer().widget()
