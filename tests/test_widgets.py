"""The r explorer: numbers shown after moving controls equal counts of models built on the meta device;
the measured accuracies it overlays are those of results/results.json; a method without a size works."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import matplotlib
import pytest
import torch
import traitlets
from transformers import BertConfig, BertForSequenceClassification

from adapterlib import TaskType, count_parameters, get_peft_model
from adapterlib.config import PeftConfig
from adapterlib.counting import head_parameter_count
from adapterlib.methods import REGISTRY, Method, methods, register
from adapterlib.plot_style import style
from adapterlib.toy import TransformerLayer
from adapterlib.widgets import (
    MEASURED_SHAPE,
    RESULTS,
    Checkboxes,
    Explorer,
    draw_curves,
    measured_accuracies,
    model_shapes,
    size_ladder,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def built_counts(explorer: Explorer) -> dict[str, tuple[int, int]]:
    """Instantiate every method at the explorer's setting (no memory: meta device) and count."""
    shape = explorer.shapes[explorer.shape.value]
    result = {}
    for name, config in explorer.configs().items():
        name = explorer.methods[name].label
        with torch.device("meta"):
            if hasattr(shape, "vocab_size"):
                config.task_type = TaskType.SEQ_CLS
                model = BertForSequenceClassification(shape)
            else:
                model = TransformerLayer(
                    shape.hidden_size, shape.num_attention_heads, shape.intermediate_size
                )
            trainable, total, _ = count_parameters(get_peft_model(model, config))
        result[name] = (trainable, total)
    return result


ALL_TARGETS = ("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense")
slow = (
    pytest.mark.slow
)  # each moved control redraws the plot (about half a second): one setting in the fast loop


@pytest.mark.parametrize(
    "shape, adapter_r, lora_r, n, placement, targets",
    [
        ("BERT-large (d=1024)", 1024, 64, 100, "houlsby", ("value",)),
        pytest.param("toy TransformerLayer (d=128)", 1, 128, 1, "houlsby", ("query",), marks=slow),
        pytest.param("toy TransformerLayer (d=128)", 128, 3, 200, "pfeiffer", ALL_TARGETS, marks=slow),
        pytest.param("MiniLM-L6 (packaged, d=384)", 16, 8, 20, "pfeiffer", ("query", "value"), marks=slow),
        pytest.param(
            "MiniLM-L6 (packaged, d=384)", 384, 384, 1, "houlsby", ("intermediate.dense",), marks=slow
        ),
    ],
)
def test_displayed_numbers_equal_built_models(shape, adapter_r, lora_r, n, placement, targets):
    explorer = Explorer()
    explorer.shape.value = shape
    explorer.sizes["adapter"].value = adapter_r
    explorer.sizes["lora"].value = lora_r
    explorer.sizes["prefix"].value = n
    explorer.choices["adapter"]["placement"].value = placement
    explorer.choices["lora"]["target_modules"].value = targets
    assert (explorer.sizes["adapter"].value, explorer.sizes["lora"].value) == (
        adapter_r,
        lora_r,
    )  # within range
    shown = {name: (c.trainable, c.total) for name, c in explorer.counts().items()}
    assert shown == built_counts(explorer)
    for name, (trainable, _) in shown.items():
        assert f"<td>{name}</td><td style='text-align:right'>{trainable:,}</td>" in explorer.table.value


def test_r_sliders_are_capped_at_the_hidden_size():
    explorer = Explorer()
    explorer.shape.value = "BERT-large (d=1024)"
    adapter_r, lora_r = explorer.sizes["adapter"], explorer.sizes["lora"]
    assert adapter_r.max == lora_r.max == 1024
    adapter_r.value = lora_r.value = 1024
    explorer.shape.value = "toy TransformerLayer (d=128)"
    assert adapter_r.max == lora_r.max == 128
    assert adapter_r.value <= 128 and lora_r.value <= 128
    assert explorer.sizes["prefix"].max == 200  # a prefix length is not capped by the width


def test_each_r_slider_moves_only_its_own_method():
    explorer = Explorer()
    before = explorer.counts()
    explorer.sizes["adapter"].value = 32
    after_adapter = explorer.counts()
    assert after_adapter["adapter"].trainable > before["adapter"].trainable
    assert (
        after_adapter["LoRA"] == before["LoRA"] and after_adapter["prefix tuning"] == before["prefix tuning"]
    )
    explorer.sizes["lora"].value = 4
    after_lora = explorer.counts()
    assert after_lora["LoRA"].trainable < after_adapter["LoRA"].trainable
    assert after_lora["adapter"] == after_adapter["adapter"]


def test_starting_ranks_are_the_package_defaults():
    from adapterlib import AdapterConfig, LoraConfig

    explorer = Explorer()
    assert (explorer.sizes["adapter"].value, explorer.sizes["lora"].value) == (
        AdapterConfig().r,
        LoraConfig().r,
    )


def test_prefix_on_bert_base_matches_the_documented_figure():
    explorer = Explorer()
    explorer.shape.value = "BERT-base (d=768)"
    explorer.sizes["prefix"].value = 20
    assert explorer.counts()["prefix tuning"].trainable == 370_178


def test_every_registered_method_with_a_size_has_a_slider():
    explorer = Explorer()
    assert list(explorer.sizes) == [method.name for method in methods() if method.size is not None]
    assert list(explorer.methods) == [method.name for method in methods()]
    assert [row.label for row in explorer.rows()] == [m.label for m in methods()] + [
        "head only",
        "full fine-tuning",
    ]


# --- controls and figure made for a projector ----------------------------------------------------------


def test_the_size_ladder_steps_one_at_a_time_where_steps_matter_and_evenly_on_a_log_scale_above():
    ladder = size_ladder(384, trained=(16, 64, 4, 20))
    assert ladder[:16] == list(range(1, 17))
    assert {4, 16, 20, 64, 384} <= set(ladder) and ladder == sorted(set(ladder))
    ratios = [b / a for a, b in zip(ladder, ladder[1:]) if a >= 16]
    assert max(ratios) < 1.12  # no jump bigger than 12% anywhere
    assert 40 < len(ladder) < 90  # a slider of a few hundred pixels has a few pixels per step
    assert size_ladder(1) == [1] and size_ladder(3) == [1, 2, 3]


def test_slider_and_number_box_move_together():
    explorer = Explorer()
    lora = explorer.sizes["lora"]
    lora.slider.value = lora.slider.options[lora.slider.options.index(8) + 1]  # one step right
    assert lora.value == lora.box.value == 9
    lora.box.value = 100  # between two of the slider's steps: the box keeps it exactly
    assert lora.value == 100 and explorer.config("lora").r == 100
    assert lora.slider.value == 99  # the slider's step nearest to 100
    assert f"{explorer.counts()['LoRA'].trainable:,} (" in explorer.numbers["lora"].value
    explorer.shape.value = "toy TransformerLayer (d=128)"
    assert lora.value == 100 and lora.slider.options[-1] == 128
    lora.value = 128
    explorer.shape.value = MEASURED_SHAPE
    assert lora.value == 128 and lora.slider.value == 128 and lora.slider.options[-1] == 384


def test_targets_are_checkboxes_a_plain_click_adds_or_removes_one():
    explorer = Explorer()
    targets = explorer.choices["lora"]["target_modules"]
    assert isinstance(targets, Checkboxes) and targets.value == ("query", "value")
    head = head_parameter_count(explorer.shapes[MEASURED_SHAPE], 2)
    before = explorer.counts()["LoRA"].trainable - head
    targets.boxes["key"].value = True  # a click on "key"
    assert set(targets.value) == {"query", "key", "value"}
    assert explorer.counts()["LoRA"].trainable - head == before * 3 // 2  # three square matrices, not two
    targets.boxes["query"].value = targets.boxes["value"].value = False
    assert targets.value == ("key",)
    targets.boxes["key"].value = False  # the last one: refused, it stays checked
    assert targets.value == ("key",) and targets.boxes["key"].value
    with pytest.raises(traitlets.TraitError, match="choose one or more of query, key, value"):
        targets.value = ()
    with pytest.raises(traitlets.TraitError, match="got querry"):
        targets.value = ("querry",)
    assert targets.value == ("key",)


def test_every_method_differs_from_every_other_in_colour_marker_and_line_style():
    styles = [style(method.name) for method in methods()]
    for feature in ("color", "marker", "linestyle"):
        assert len({str(getattr(s, feature)) for s in styles}) == len(styles), feature


def test_the_figure_has_one_y_axis_per_panel_and_the_legend_outside_both():
    explorer = Explorer()
    figure = draw_curves(explorer, explorer.shapes[MEASURED_SHAPE])
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    assert len(figure.axes) == 2  # cost and accuracy, no twin axes
    legend = figure.legends[0].get_window_extent(renderer)
    assert not any(legend.overlaps(ax.get_window_extent(renderer)) for ax in figure.axes)
    texts = [t for t in figure.findobj(matplotlib.text.Text) if t.get_text().strip()]
    assert min(t.get_fontsize() for t in texts) >= 12  # 16 px and more at the figure's own size
    plt.close(figure)


# --- the measured accuracies of results/ -------------------------------------------------------------------


def committed_summary() -> list[dict]:
    return json.loads((ROOT / "results" / "results.json").read_text())["summary"]


def accuracy_text(row: dict) -> str:
    """A summary row as the table shows it, written out here independently of the package."""
    return f"{row['accuracy_mean']:.1f} ± {row['ci95_seeds']:.1f}%"


def drawn(figure, gid: str) -> list:
    """The lines of ``figure`` (every panel, both axes) drawn for ``gid`` ("measured lora")."""
    return [line for ax in figure.axes for line in ax.get_lines() if line.get_gid() == gid]


def panel_text(figure) -> str:
    """The message written in the accuracy panel in place of measurements."""
    return " ".join(text.get_text() for text in figure.axes[1].texts)


def test_results_are_found_beside_the_package_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RESULTS == ROOT / "results" / "results.json"
    assert len(Explorer().measured) == len(committed_summary())


def test_the_committed_runs_trained_the_shape_the_explorer_names():
    from adapterlib.modeling import PACKAGED_MODEL, model_location

    runs = json.loads((ROOT / "results" / "results.json").read_text())["runs"]
    assert {run["model"] for run in runs} == {PACKAGED_MODEL}
    packaged = BertConfig.from_pretrained(model_location(PACKAGED_MODEL))
    shape = model_shapes()[MEASURED_SHAPE]
    for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"):
        assert getattr(shape, field) == getattr(packaged, field)


def test_each_method_draws_one_point_per_trained_size_in_results_json():
    explorer = Explorer()
    figure = draw_curves(explorer, explorer.shapes[MEASURED_SHAPE])
    summary = committed_summary()
    drawn_somewhere = 0
    for name, method in explorer.methods.items():
        rows = [row for row in summary if row["method"] == name]
        lines = drawn(figure, f"measured {name}")
        if not rows:
            assert lines == []
            continue
        assert len(lines) == 1
        x, y = lines[0].get_data()
        if method.size is not None:  # "lora r=2" -> 2, drawn a few percent sideways
            trained = sorted(int(row["variant"].rpartition("=")[2]) for row in rows)
            assert list(x) == pytest.approx(trained, rel=0.3)
        assert sorted(y) == pytest.approx(sorted(row["accuracy_mean"] for row in rows))
        drawn_somewhere += len(rows)
    assert drawn_somewhere >= 9  # adapter, LoRA and prefix tuning at 3 sizes each
    for name in ("full", "head"):
        (row,) = [row for row in summary if row["method"] == name]
        lines = drawn(figure, f"measured {name}")
        assert len(lines) == 1  # a reference line across the accuracy panel
        assert lines[0].get_ydata()[0] == pytest.approx(row["accuracy_mean"])
    assert "SST-2, 3 seeds, 95% interval" in figure.axes[1].get_title()
    plt.close(figure)


def test_the_table_shows_the_measured_accuracy_at_a_trained_size_only():
    summary = {row["variant"]: row for row in committed_summary()}
    explorer = Explorer()
    shown = {row.label: row.measured for row in explorer.rows()}
    assert shown["adapter"] == accuracy_text(summary["adapter r=16"])  # the starting sizes were trained
    assert shown["LoRA"] == accuracy_text(summary["lora r=8"])
    assert shown["full fine-tuning"] == accuracy_text(summary["full"])
    assert shown["head only"] == accuracy_text(summary["head"])
    explorer.sizes["lora"].value = 2
    assert (
        f"<td>LoRA</td><td style='text-align:right'>{explorer.counts()['LoRA'].trainable:,}</td>"
        in explorer.table.value
    )
    assert f"<td style='text-align:right'>{accuracy_text(summary['lora r=2'])}</td>" in explorer.table.value
    explorer.sizes["lora"].value = 3
    assert {row.label: row.measured for row in explorer.rows()}["LoRA"] == "not trained at this size"
    assert "not trained at this size" in explorer.table.value
    assert {row.label: row.measured for row in explorer.rows()}["adapter"] == accuracy_text(
        summary["adapter r=16"]
    )


def test_a_measurement_is_shown_only_for_the_choices_and_model_it_was_trained_with():
    explorer = Explorer()
    explorer.choices["lora"]["target_modules"].value = (
        "value",
        "query",
    )  # the same targets, in another order
    assert {row.label: row.measured for row in explorer.rows()}["LoRA"] != "not trained with these choices"
    explorer.choices["lora"]["target_modules"].value = ("query", "key", "value")
    explorer.choices["adapter"]["placement"].value = "houlsby"
    shown = {row.label: row.measured for row in explorer.rows()}
    assert shown["LoRA"] == shown["adapter"] == "not trained with these choices"
    assert drawn(draw_curves(explorer, explorer.shapes[MEASURED_SHAPE]), "measured lora") == []
    explorer.shape.value = "BERT-base (d=768)"
    assert {row.measured for row in explorer.rows()} == {"trained on MiniLM-L6 only"}
    figure = draw_curves(explorer, explorer.shapes["BERT-base (d=768)"])
    assert "choose it to see them" in panel_text(figure).replace("\n", " ")
    assert not [line for line in figure.axes[1].get_lines() if line.get_gid()]
    plt.close("all")


def test_a_missing_results_file_is_a_message_in_the_widget(tmp_path):
    missing = tmp_path / "results" / "results.json"
    with pytest.raises(FileNotFoundError, match="results/results.json was not found"):
        measured_accuracies(missing)
    explorer = Explorer(results=missing)  # no exception: the counts still work
    assert explorer.measured == [] and "not found" in explorer.missing
    assert "No measured accuracies: results/results.json was not found" in explorer.table.value
    assert "measured accuracy</th>" not in explorer.table.value
    assert str(tmp_path) not in explorer.table.value  # no machine path in the readout
    explorer.sizes["lora"].value = 4
    assert f"{explorer.counts()['LoRA'].trainable:,}" in explorer.table.value
    figure = draw_curves(explorer, explorer.shapes[MEASURED_SHAPE])
    assert "No measured accuracies" in panel_text(figure).replace("\n", " ")
    assert not [line for line in figure.axes[1].get_lines() if line.get_gid()]
    plt.close(figure)


# --- a method without a size -------------------------------------------------------------------------------


@dataclass
class NormsConfig(PeftConfig):
    """Train the LayerNorm gains only: 2 LayerNorms of d gains per layer."""

    method: ClassVar[str] = "layernorm-gains"


class NormGains(Method):
    def parameter_count(self, model_config, config: PeftConfig) -> int:
        return model_config.num_hidden_layers * 2 * model_config.hidden_size


@pytest.fixture
def sizeless_method():
    """A method with nothing to size, on the registry for this test only."""
    method = register(
        NormGains(
            name="layernorm-gains",
            label="LayerNorm gains",
            config_class=NormsConfig,
            learning_rate=1e-3,
            marker="P",
        )
    )
    try:
        yield method
    finally:
        del REGISTRY[method.name]


def results_with(tmp_path, method: str, accuracy: float, interval: float):
    """The committed results.json plus a summary row and its runs for ``method``."""
    results = json.loads((ROOT / "results" / "results.json").read_text())
    results["summary"].append(
        {"variant": method, "method": method, "seeds": 3, "accuracy_mean": accuracy, "ci95_seeds": interval}
    )
    results["runs"].append(
        {"method": method, "recipe": {"method_options": {}}, "peft_config": {"method": method}}
    )
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


def test_a_sizeless_method_has_no_slider_and_a_fixed_row(sizeless_method):
    explorer = Explorer()
    assert sizeless_method.name in explorer.methods and sizeless_method.name not in explorer.sizes
    minilm = explorer.shapes[MEASURED_SHAPE]
    expected = 6 * 2 * 384 + head_parameter_count(minilm, 2)
    assert explorer.counts()["LayerNorm gains"].trainable == expected
    for _name, slider in explorer.sizes.items():  # no slider moves it
        slider.value = 3
        assert explorer.counts()["LayerNorm gains"].trainable == expected
    assert f"<td>LayerNorm gains</td><td style='text-align:right'>{expected:,}</td>" in explorer.table.value
    assert {row.label: row.measured for row in explorer.rows()}["LayerNorm gains"] == "not trained"
    explorer.shape.value = "BERT-base (d=768)"
    assert explorer.counts()["LayerNorm gains"].trainable == 12 * 2 * 768 + 2 * 768 + 2
    assert list(explorer.sizes) == [m.name for m in methods() if m.size is not None]


def test_a_sizeless_method_is_a_horizontal_line_in_the_cost_panel(sizeless_method):
    explorer = Explorer()
    figure = draw_curves(explorer, explorer.shapes[MEASURED_SHAPE])
    fraction = 100 * explorer.counts()["LayerNorm gains"].fraction
    (line,) = drawn(figure, "cost layernorm-gains")
    assert list(line.get_ydata()) == [fraction, fraction]
    assert "LayerNorm gains" in [t.get_text() for t in figure.legends[0].get_texts()]
    assert drawn(figure, "measured layernorm-gains") == []  # not in results/
    plt.close(figure)


def test_a_sizeless_method_in_results_is_a_measured_point(sizeless_method, tmp_path):
    explorer = Explorer(results=results_with(tmp_path, "layernorm-gains", 81.25, 0.5))
    assert {row.label: row.measured for row in explorer.rows()}["LayerNorm gains"] == "81.2 ± 0.5%"
    assert "<td style='text-align:right'>81.2 ± 0.5%</td>" in explorer.table.value
    figure = draw_curves(explorer, explorer.shapes[MEASURED_SHAPE])
    points = drawn(figure, "measured layernorm-gains")
    assert len(points) == 1 and list(points[0].get_ydata()) == [81.25]
    plt.close(figure)
