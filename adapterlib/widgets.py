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

import io
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import traitlets
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter
from transformers import BertConfig

from .compare import variant_name
from .config import PeftConfig
from .counting import (
    bert_parameter_count,
    head_parameter_count,
    layer_parameter_count,
    method_parameter_count,
)
from .methods import Method, baselines, get_baseline, get_method, method_names, methods
from .plot_style import DPI, FONT_SIZE, SIDEWAYS, style
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


def size_ladder(limit: int, trained: tuple[int, ...] = (), steps_per_octave: int = 8) -> list[int]:
    """The sizes a slider offers: every whole number up to ``2 * steps_per_octave`` (one step at a time
    where a step matters most), then evenly spaced on a log scale, ``steps_per_octave`` per doubling
    (about 9% apart); ``limit`` and the trained sizes too."""
    octaves = math.ceil(math.log2(limit)) if limit > 1 else 0
    steps = {round(2 ** (k / steps_per_octave)) for k in range(steps_per_octave * octaves + 1)}
    steps |= set(range(1, 2 * steps_per_octave + 1))
    return sorted({s for s in steps | set(trained) if 1 <= s <= limit} | {limit})


def nearest(ladder: list[int], value: int) -> int:
    """The ladder's size nearest to ``value`` on a log scale."""
    return min(ladder, key=lambda size: abs(math.log(size / value)))


class SizeControl(widgets.HBox):
    """One method's size: a log-scale slider over :func:`size_ladder` and a number box beside it for
    any exact value; ``value`` and ``max`` are the number box's."""

    value = traitlets.Int()
    max = traitlets.Int()

    def __init__(self, label: str, value: int, limit: int, trained: tuple[int, ...]) -> None:
        self.trained = trained
        self.box = widgets.BoundedIntText(
            value=value, min=1, max=limit, layout=widgets.Layout(width="5.5em", flex="0 0 auto")
        )
        ladder = size_ladder(limit, trained)
        self.slider = widgets.SelectionSlider(
            options=ladder,
            value=nearest(ladder, value),
            readout=False,
            continuous_update=False,
            layout=widgets.Layout(flex="1 1 10em", min_width="5em"),
        )
        title = widgets.HTML(f"<b>{label}</b>", layout=widgets.Layout(width="max-content"))
        super().__init__([title, self.slider, self.box], layout=widgets.Layout(width="100%"))
        self.add_class("size-control")
        self.value, self.max = value, limit
        self.following = False  # True while the slider is moved to follow the box
        traitlets.link((self, "max"), (self.box, "max"))  # a smaller max cuts the box's value to it
        traitlets.link((self.box, "value"), (self, "value"))
        self.slider.observe(self.from_slider, names="value")
        self.observe(self.follow, names="value")
        self.observe(self.new_limit, names="max")

    def from_slider(self, change) -> None:
        if not self.following:
            self.value = change["new"]

    def move_slider(self, ladder: list[int]) -> None:
        self.following = True
        self.slider.options = ladder
        self.slider.value = nearest(ladder, self.value)
        self.following = False

    def follow(self, change) -> None:
        self.move_slider(list(self.slider.options))

    def new_limit(self, change) -> None:
        """Another model's width: the ladder ends at the new limit."""
        self.move_slider(size_ladder(change["new"], self.trained))


FIELD_LABELS = {"target_modules": "targets"}  # short names for the explorer's choices
TARGET_LABELS = {
    "attention.output.dense": "attention output",
    "intermediate.dense": "FFN in",
    "output.dense": "FFN out",
}


class Checkboxes(widgets.HBox):
    """Several names at once, one checkbox each: a plain click adds or removes one. ``value`` is the
    tuple of the names checked, in the order offered, never empty (the last one cannot be unchecked)."""

    value = traitlets.Tuple()

    def __init__(self, label: str, options: tuple[str, ...], value: tuple[str, ...]) -> None:
        self.options = options
        self.boxes = {
            name: widgets.Checkbox(
                value=name in value,
                description=TARGET_LABELS.get(name, name),
                indent=False,
                layout=widgets.Layout(width="max-content", margin="0 1.2em 0 0"),
            )
            for name in options
        }
        title = widgets.HTML(f"{label}:", layout=widgets.Layout(width="max-content", margin="0 0.6em 0 0"))
        super().__init__([title, *self.boxes.values()], layout=widgets.Layout(flex_flow="row wrap"))
        self.value = tuple(value)
        for box in self.boxes.values():
            box.observe(self.from_boxes, names="value")
        self.add_class("checkboxes")

    @traitlets.validate("value")
    def _valid(self, proposal) -> tuple[str, ...]:
        chosen = tuple(proposal["value"])
        unknown = [name for name in chosen if name not in self.options]
        if unknown or not chosen:
            raise traitlets.TraitError(
                f"choose one or more of {', '.join(self.options)}; got {', '.join(chosen) or 'none'}"
            )
        return chosen

    @traitlets.observe("value")
    def to_boxes(self, change) -> None:
        for name, box in self.boxes.items():
            box.value = name in change["new"]

    def from_boxes(self, change) -> None:
        checked = tuple(name for name, box in self.boxes.items() if box.value)
        if not checked:  # the last one stays: a method needs a target
            change["owner"].value = True
        elif set(checked) != set(self.value):
            self.value = checked


def choice_control(name: str, choices: tuple[str, ...], default) -> widgets.Widget:
    """Checkboxes for a tuple-valued field (LoRA's targets), else toggle buttons (named where shown)."""
    if isinstance(default, tuple):
        return Checkboxes(name, choices, default)
    return widgets.ToggleButtons(options=choices, value=default, layout=widgets.Layout(width="auto"))


def labelled(name: str, control: widgets.Widget) -> widgets.Widget:
    """``control`` with its field's name on the same line (checkboxes carry their own)."""
    if isinstance(control, Checkboxes):
        return control
    label = widgets.HTML(f"{FIELD_LABELS.get(name, name)}:", layout=widgets.Layout(margin="0 0.6em 0 0"))
    return widgets.HBox([label, control], layout=widgets.Layout(align_items="center"))


@dataclass(frozen=True)
class Row:
    """One line of the explorer's table: a method's cost here and what results/ measured for it."""

    label: str
    count: Count
    measured: str  # "83.6 ± 1.0%", or why there is no measurement ("not trained at this size")


STYLE_SHEET = """<style>
.adapterlib-explorer { --jp-widgets-font-size: 15px; --jp-widgets-inline-height: 28px;
  font-size: 15px; max-width: 100%; }
.adapterlib-explorer .explorer-card { border: 1px solid #ccc; border-radius: 4px; padding: 2px 8px;
  margin: 0 6px 6px 0; flex: 1 1 22em; max-width: 100%; }
.adapterlib-explorer .size-control .widget-html-content { font-size: 15px; padding-right: 0.5em;
  white-space: nowrap; }
.adapterlib-explorer .widget-html-content { line-height: 1.35; }
.adapterlib-explorer .widget-toggle-button { width: auto; padding: 0 0.8em; }
.adapterlib-explorer .card-numbers { font-size: 15px; }
.adapterlib-explorer table { font-size: 15px; border-collapse: collapse; }
.adapterlib-explorer td, .adapterlib-explorer th { padding: 2px 10px; }
.adapterlib-explorer .note { font-size: 14px; }
.adapterlib-explorer img { max-width: 100%; height: auto; }
</style>"""


class Explorer:
    """The controls, the live numbers and the plot; ``rows()`` is what the table shows."""

    def __init__(self, results: Path = RESULTS) -> None:
        self.shapes = model_shapes()
        self.shape = widgets.Dropdown(
            options=list(self.shapes),
            value=MEASURED_SHAPE,
            description="model:",
            style={"description_width": "initial"},
            layout=widgets.Layout(width="max-content"),
        )
        self.methods = {method.name: method for method in methods()}
        self.sizes: dict[str, SizeControl] = {}  # methods with a size only
        self.choices: dict[str, dict[str, widgets.Widget]] = {}
        shape = self.shapes[self.shape.value]
        for method in methods():
            default = method.config_class()
            if method.size is not None:
                self.sizes[method.name] = SizeControl(
                    f"{method.label} {method.size.symbol}",
                    getattr(default, method.size.field),
                    size_limit(method, shape),
                    method.size.grid,
                )
            self.choices[method.name] = {
                field: choice_control(FIELD_LABELS.get(field, field), options, getattr(default, field))
                for field, options in method.explorer_choices.items()
            }
        try:
            self.measured, self.missing = measured_accuracies(results), None
        except FileNotFoundError as error:
            self.measured, self.missing = [], str(error)
        self.numbers = {name: widgets.HTML() for name in self.sizes}  # each card's count and accuracy
        self.table = widgets.HTML()
        self.plot = widgets.Image(format="png", layout=widgets.Layout(width="100%"))
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
        options = {field: control.value for field, control in self.choices[name].items()}
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
        for name, control in self.sizes.items():
            control.max = size_limit(self.methods[name], shape)  # r never exceeds the hidden size
        rows = {row.label: row for row in self.rows()}
        for name, numbers in self.numbers.items():
            row = rows[self.methods[name].label]
            accuracy = f" · {row.measured.replace(' at this size', '')}" if self.measured else ""
            numbers.value = (
                f"<span class='card-numbers'>{row.count.trainable:,} "
                f"({100 * row.count.fraction:.3f}%){accuracy}</span>"
            )
        self.table.value = table_html(self)
        figure = draw_curves(self, shape)
        picture = io.BytesIO()
        figure.savefig(picture, format="png")
        plt.close(figure)
        self.plot.value = picture.getvalue()
        self.plot.layout.max_width = f"{round(figure.get_figwidth() * figure.dpi)}px"  # never enlarged

    def cards(self) -> list[widgets.Widget]:
        """One box per method with a size: its slider and number box, its choices, its numbers."""
        return [
            widgets.VBox(
                [
                    control,
                    *(labelled(field, choice) for field, choice in self.choices[name].items()),
                    self.numbers[name],
                ],
                layout=widgets.Layout(flex="1 1 22em"),
            ).add_class("explorer-card")
            for name, control in self.sizes.items()
        ]

    def widget(self) -> widgets.Widget:
        """Controls above the plot in boxes that wrap onto more lines in a narrow window; the table below."""
        key = "trainable parameters (share of the model)" + " · measured accuracy" * bool(self.measured)
        model = widgets.VBox(
            [self.shape, widgets.HTML(f"<span class='note'>under each size: {key}</span>")],
            layout=widgets.Layout(flex="1 1 18em"),
        )
        controls = widgets.Box(
            [model, *self.cards()], layout=widgets.Layout(flex_flow="row wrap", align_items="stretch")
        )
        box = widgets.VBox([widgets.HTML(STYLE_SHEET), controls, self.plot, self.table])
        return box.add_class("adapterlib-explorer")


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
    return f"<table>{''.join(lines)}</table><p class='note'>{note}</p>"


def sizes_to_draw(limit: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit``, and ``limit`` itself."""
    steps = [m * 10**e for e in range(5) for m in (1, 2, 5)]
    return sorted({s for s in steps if s <= limit} | {limit})


EXPLORER_FONT = FONT_SIZE - 1  # the explorer's figure is shown a little smaller than its own size


def draw_curves(explorer: Explorer, shape):
    """Two panels with one y-axis each, against each method's size (r, or n for prefix tuning):
    left, what it costs (trainable parameters as a % of the model, log scale), the sliders' settings
    as large markers and a method without a size as a horizontal line; right, what the comparison
    grid measured (:func:`draw_measured`). Every method has its own colour, marker and line style
    (:mod:`adapterlib.plot_style`)."""
    figure, (cost, accuracy) = plt.subplots(1, 2, figsize=(10.5, 3.15), dpi=DPI, layout="constrained")
    current = explorer.counts()
    limit = max(size_limit(method, shape) for method in explorer.methods.values() if method.size)
    for method in explorer.methods.values():
        drawn = style(method.name)
        if method.size is None:
            cost.axhline(
                100 * current[method.label].fraction,
                color=drawn.color,
                linestyle=drawn.linestyle,
                linewidth=2,
                gid=f"cost {method.name}",
            )
            continue
        sizes = sizes_to_draw(size_limit(method, shape))
        fractions = [100 * count(shape, explorer.config(method.name, size)).fraction for size in sizes]
        cost.plot(sizes, fractions, color=drawn.color, linestyle=drawn.linestyle, linewidth=2)
        cost.plot(
            explorer.sizes[method.name].value,
            100 * current[method.label].fraction,
            marker=drawn.marker,
            color=drawn.color,
            markersize=12,
            markeredgecolor="white",
            gid=f"setting {method.name}",
        )
    cost.axhline(100, color=style("full").color, linestyle=style("full").linestyle)
    cost.set(xscale="log", yscale="log", xlim=(0.8, limit * 1.25))
    cost.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}%"))
    cost.set_title("cost: trainable parameters (% of the model)", fontsize=EXPLORER_FONT)
    draw_measured(accuracy, explorer, limit)
    for ax in (cost, accuracy):
        ax.set_xlabel("size: r, or n for prefix tuning", fontsize=EXPLORER_FONT)
        ax.tick_params(labelsize=EXPLORER_FONT)
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], linewidth=2, markersize=9, **style(name).line(), label=method.label)
        for name, method in explorer.methods.items()
    ] + [
        Line2D(
            [], [], color=style(name).color, linestyle=style(name).linestyle, label=get_baseline(name).label
        )
        for name in [baseline.name for baseline in baselines()]
    ]
    figure.legend(handles=handles, loc="outside right upper", fontsize=EXPLORER_FONT - 1, frameon=False)
    return figure


def accuracy_range(measured: list[Measured], margin: float = 0.5) -> tuple[float, float]:
    """Every measurement's interval, with a margin: one scale whatever the controls."""
    low = min(m.accuracy - (m.interval or 0) for m in measured)
    high = max(m.accuracy + (m.interval or 0) for m in measured)
    return low - margin, high + margin


def draw_measured(ax, explorer: Explorer, limit: int):
    """The accuracy panel: each trained size that matches the model and choices as a marker with its
    95% interval over seeds (ringed where the slider is), a method without a size right of the grey
    line, full fine-tuning and the head alone as horizontal lines; or why there is nothing to show."""
    ax.set(xscale="log", xlim=(0.8, limit * 2.2))
    why_empty = explorer.missing or (
        None
        if explorer.shape.value == MEASURED_SHAPE
        else f"Measured accuracies are for {MEASURED_SHAPE}: choose it to see them."
    )
    if why_empty:
        ax.text(
            0.5,
            0.5,
            textwrap.fill(why_empty, 30),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=EXPLORER_FONT,
        )
        ax.set_title("accuracy", fontsize=EXPLORER_FONT)
        ax.axis("off")
        return ax
    sized = [method for method in explorer.methods.values() if method.size is not None]
    for index, method in enumerate(sized):
        drawn = style(method.name)
        points = sorted(explorer.measured_here(method.name), key=lambda m: m.size)
        if not points:
            continue
        shift = 10 ** (SIDEWAYS * (index - (len(sized) - 1) / 2))  # bars at one size side by side
        bars = ax.errorbar(
            [shift * p.size for p in points],
            [p.accuracy for p in points],
            yerr=[p.interval or 0 for p in points],
            **drawn.line(),
            linewidth=2,
            capsize=4,
            markersize=9,
        )
        bars.lines[0].set_gid(f"measured {method.name}")
        for p in points:
            if p.size == explorer.sizes[method.name].value:
                ax.plot(shift * p.size, p.accuracy, "o", color=drawn.color, markersize=20, fillstyle="none")
    ax.axvline(limit * 1.15, color="grey", linewidth=1)
    sizeless = [method for method in explorer.methods.values() if method.size is None]
    for i, method in enumerate(sizeless):
        for p in explorer.measured_here(method.name):
            x = (
                limit * 1.35 * 1.2**i
            )  # side by side right of the grey line: there is no size to place them at
            bars = ax.errorbar(
                [x],
                [p.accuracy],
                yerr=[p.interval or 0],
                color=style(method.name).color,
                marker=style(method.name).marker,
                capsize=4,
                markersize=9,
            )
            bars.lines[0].set_gid(f"measured {method.name}")
    for name in [baseline.name for baseline in baselines()]:
        for p in explorer.measured_here(name):
            ax.axhline(
                p.accuracy,
                color=style(name).color,
                linestyle=style(name).linestyle,
                gid=f"measured {name}",
            )
    ax.set_ylim(accuracy_range(explorer.measured))
    ax.set_title(
        f"accuracy (%): SST-2, {seeds_label(explorer.measured)}, 95% interval", fontsize=EXPLORER_FONT
    )
    return ax


def explorer() -> widgets.Widget:
    """The explorer, ready to display in JupyterLab."""
    return Explorer().widget()
