"""An interactive explorer: how each method's size trades trainable parameters, on real shapes.

``explorer()`` returns an ipywidgets box. Every number it shows comes from the closed forms the
method files state (:mod:`adapterlib.methods`), which the tests check against models built on
the ``meta`` device. Every registered method gets a slider for its size and a control for each
choice it declares (the adapter's placement, LoRA's targets): the same ``r`` means different
things (and costs) in the adapter and in LoRA. For the BERT shapes the model is a 2-class
``BertForSequenceClassification``, pooler included (the head trains with every method); the toy
layer has no head.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from transformers import BertConfig

from .config import PeftConfig
from .counting import bert_parameter_count, head_parameter_count, layer_parameter_count, method_parameter_count
from .methods import Method, methods
from .toy import ToyConfig


def model_shapes() -> dict[str, object]:
    """The shapes to explore; configs only, no weights."""
    return {
        "toy TransformerLayer (d=128)": ToyConfig(),
        "MiniLM-L6 (packaged, d=384)": BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
        "BERT-base (d=768)": BertConfig(),
        "BERT-large (d=1024)": BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    }


@dataclass(frozen=True)
class Count:
    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total


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


def size_limit(method: Method, shape) -> int:
    return method.size.explorer_max or shape.hidden_size


def choice_control(name: str, choices: tuple[str, ...], default) -> widgets.Widget:
    """A multiple choice for a tuple-valued field (LoRA's targets), else toggle buttons."""
    if isinstance(default, tuple):
        return widgets.SelectMultiple(options=choices, value=default, rows=len(choices), description=name)
    return widgets.ToggleButtons(options=choices, value=default, description=name)


class Explorer:
    """The controls, the live numbers and the plot; ``counts()`` is what the table shows."""

    def __init__(self) -> None:
        self.shapes = model_shapes()
        self.shape = widgets.Dropdown(options=list(self.shapes), value="MiniLM-L6 (packaged, d=384)", description="model")
        self.methods = {method.name: method for method in methods()}
        self.sizes: dict[str, widgets.IntSlider] = {}
        self.choices: dict[str, dict[str, widgets.Widget]] = {}
        for method in methods():
            default = method.config_class()
            self.sizes[method.name] = widgets.IntSlider(
                value=getattr(default, method.size.field), min=1, max=1024,
                description=f"{method.label} {method.size.symbol}", style={"description_width": "initial"},
            )
            self.choices[method.name] = {
                field: choice_control(field.replace("_", " "), options, getattr(default, field))
                for field, options in method.explorer_choices.items()
            }
        self.table = widgets.HTML()
        self.plot = widgets.Output()
        self.controls = [self.shape, *self.sizes.values(), *(c for group in self.choices.values() for c in group.values())]
        for control in self.controls:
            control.observe(self.update, names="value")
        self.update()

    def config(self, name: str, size: int | None = None) -> PeftConfig:
        """Method ``name`` at the controls' settings, or at the size given."""
        method = self.methods[name]
        options = {field: control.value for field, control in self.choices[name].items() if control.value}
        options[method.size.field] = size or self.sizes[name].value
        return method.config_class(**options)

    def configs(self) -> dict[str, PeftConfig]:
        return {name: self.config(name) for name in self.methods}

    def counts(self) -> dict[str, Count]:
        """``{method label: count}`` at the controls' settings."""
        shape = self.shapes[self.shape.value]
        return {self.methods[name].label: count(shape, config) for name, config in self.configs().items()}

    def update(self, change=None) -> None:
        shape = self.shapes[self.shape.value]
        for name, slider in self.sizes.items():
            slider.max = size_limit(self.methods[name], shape)  # r never exceeds the hidden size
        rows = "".join(
            f"<tr><td>{name}</td><td style='text-align:right'>{c.trainable:,}</td><td style='text-align:right'>{100 * c.fraction:.3f}%</td></tr>"
            for name, c in self.counts().items()
        )
        full = full_fine_tuning(shape)
        self.table.value = (
            f"<table><tr><th>method</th><th>trainable</th><th>fraction</th></tr>{rows}"
            f"<tr><td>full fine-tuning</td><td style='text-align:right'>{full.trainable:,}</td><td style='text-align:right'>100%</td></tr></table>"
        )
        with self.plot:
            self.plot.clear_output(wait=True)
            figure = draw_curves(self, shape)
            display(figure)
            plt.close(figure)

    def widget(self) -> widgets.Widget:
        return widgets.VBox([widgets.HBox([widgets.VBox(self.controls), self.table]), self.plot])


def sizes_to_draw(limit: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to ``limit``, and ``limit`` itself."""
    steps = [m * 10**e for e in range(5) for m in (1, 2, 5)]
    return sorted({s for s in steps if s <= limit} | {limit})


def draw_curves(explorer: Explorer, shape):
    """Trainable fraction against each method's size, one panel per kind of size (r, prefix
    length n), each slider's setting marked."""
    panels: dict[str, list[str]] = {}
    for name, method in explorer.methods.items():
        panels.setdefault(method.size.symbol, []).append(name)
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    current = explorer.counts()
    colours = {name: f"C{i}" for i, name in enumerate(explorer.methods)}
    for ax, (symbol, names) in zip(axes[0], panels.items()):
        for name in names:
            method = explorer.methods[name]
            sizes = sizes_to_draw(size_limit(method, shape))
            fractions = [100 * count(shape, explorer.config(name, size)).fraction for size in sizes]
            ax.plot(sizes, fractions, color=colours[name], label=method.label)
            ax.plot(explorer.sizes[name].value, 100 * current[method.label].fraction, "o", color=colours[name], markersize=9)
        what = " / ".join(f"{explorer.methods[n].label} {symbol}" for n in names)
        ax.axhline(100, color="grey", linestyle="--", label="full fine-tuning")
        ax.set(xscale="log", yscale="log", xlabel=what, ylabel="trainable parameters (%)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def explorer() -> widgets.Widget:
    """The explorer, ready to display in JupyterLab."""
    return Explorer().widget()
