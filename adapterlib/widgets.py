"""An interactive explorer: how ``r`` and the prefix length trade trainable parameters, on real shapes.

``explorer()`` returns an ipywidgets box. Every number it shows comes from the closed forms in
:mod:`adapterlib.counting`, which the tests check against models built on the ``meta`` device.
The adapter's bottleneck width and LoRA's rank have a slider each: the same ``r`` means different
things (and costs) in the two methods. For the BERT shapes the model is a 2-class
``BertForSequenceClassification``, pooler included (the head trains with every method); the toy
layer has no head.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display
from transformers import BertConfig

from .config import AdapterConfig, LoraConfig, PeftConfig, PrefixTuningConfig
from .counting import bert_parameter_count, head_parameter_count, layer_parameter_count, method_parameter_count
from .toy import ToyConfig

LORA_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")


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


class Explorer:
    """The controls, the live numbers and the plot; ``counts()`` is what the table shows."""

    def __init__(self) -> None:
        self.shapes = model_shapes()
        self.shape = widgets.Dropdown(options=list(self.shapes), value="MiniLM-L6 (packaged, d=384)", description="model")
        self.adapter_r = widgets.IntSlider(value=16, min=1, max=384, description="adapter r")
        self.lora_r = widgets.IntSlider(value=8, min=1, max=384, description="LoRA r")
        self.prefix_length = widgets.IntSlider(value=20, min=1, max=200, description="prefix n")
        self.placement = widgets.ToggleButtons(options=["pfeiffer", "houlsby"], value="pfeiffer", description="placement")
        self.targets = widgets.SelectMultiple(options=LORA_TARGETS, value=("query", "value"), rows=6, description="LoRA on")
        self.table = widgets.HTML()
        self.plot = widgets.Output()
        self.controls = (self.shape, self.adapter_r, self.lora_r, self.prefix_length, self.placement, self.targets)
        for control in self.controls:
            control.observe(self.update, names="value")
        self.update()

    def configs(self, adapter_r: int | None = None, lora_r: int | None = None, n: int | None = None) -> dict[str, PeftConfig]:
        """The three methods at the sliders' settings, or at the sizes given."""
        targets = self.targets.value or ("query",)
        return {
            "adapter": AdapterConfig(r=adapter_r or self.adapter_r.value, placement=self.placement.value),
            "LoRA": LoraConfig(r=lora_r or self.lora_r.value, target_modules=targets),
            "prefix": PrefixTuningConfig(num_virtual_tokens=n or self.prefix_length.value),
        }

    def counts(self) -> dict[str, Count]:
        shape = self.shapes[self.shape.value]
        return {name: count(shape, config) for name, config in self.configs().items()}

    def update(self, change=None) -> None:
        shape = self.shapes[self.shape.value]
        for slider in (self.adapter_r, self.lora_r):
            slider.max = shape.hidden_size  # r never exceeds the hidden size
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
        return widgets.VBox([widgets.HBox([widgets.VBox(list(self.controls)), self.table]), self.plot])


def draw_curves(explorer: Explorer, shape):
    """Trainable fraction vs r (adapter, LoRA) and vs prefix length, each slider's setting marked."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    ranks = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, shape.hidden_size} & set(range(1, shape.hidden_size + 1)))
    current = explorer.counts()
    for name, slider, colour in (("adapter", explorer.adapter_r, "C0"), ("LoRA", explorer.lora_r, "C1")):
        fractions = [100 * count(shape, explorer.configs(adapter_r=r, lora_r=r)[name]).fraction for r in ranks]
        left.plot(ranks, fractions, color=colour, label=name)
        left.plot(slider.value, 100 * current[name].fraction, "o", color=colour, markersize=9)
    lengths = [1, 2, 5, 10, 20, 50, 100, 200]
    right.plot(lengths, [100 * count(shape, explorer.configs(n=n)["prefix"]).fraction for n in lengths], color="C2", label="prefix")
    right.plot(explorer.prefix_length.value, 100 * current["prefix"].fraction, "o", color="C2", markersize=9)
    for ax, xlabel in ((left, "r (bottleneck width / LoRA rank)"), (right, "prefix length n")):
        ax.axhline(100, color="grey", linestyle="--", label="full fine-tuning")
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="trainable parameters (%)")
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def explorer() -> widgets.Widget:
    """The explorer, ready to display in JupyterLab."""
    return Explorer().widget()
