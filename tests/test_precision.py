"""Training precision: "auto" by default (bf16 autocast where the hardware has it, else fp32), either
precision on request, and every record naming the precision it ran in."""

import json
from pathlib import Path

import pytest
import torch

import adapterlib.modeling as modeling
import adapterlib.train
from adapterlib.cli import build_parser, main
from adapterlib.modeling import cpu_computes_bf16, resolve_precision
from adapterlib.train import Recipe
from conftest import tiny_train_argv


def test_default_is_auto_everywhere_and_unknown_precisions_are_refused():
    assert Recipe("lora").precision == "auto"
    for command in (["train", "--method", "lora", "--out", "x"], ["compare", "--out", "x"]):
        assert build_parser().parse_args(command).precision == "auto"
    with pytest.raises(ValueError, match="precision 'fp16' is not known; use one of: auto, bf16, fp32"):
        Recipe("lora", precision="fp16")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--method", "lora", "--precision", "fp16", "--out", "x"])


def test_auto_follows_the_hardware(monkeypatch):
    assert [resolve_precision(p, "cpu") for p in ("fp32", "bf16")] == ["fp32", "bf16"]  # as asked, anywhere
    monkeypatch.setattr(modeling, "cpu_computes_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("auto", "mps") == "fp32"
    monkeypatch.setattr(modeling, "cpu_computes_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_precision("auto", "cuda") == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda") == "bf16"


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="reads the CPU flags of Linux")
def test_bf16_detection_agrees_with_the_cpu_flags():
    flags = set(
        next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        ).split()
    )
    assert cpu_computes_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.parametrize("asked, bf16_cpu, expected", [("bf16", None, "bf16"), ("auto", False, "fp32")])
def test_training_and_evaluation_run_in_the_recorded_precision(
    asked, bf16_cpu, expected, tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch
):
    """A hook on the first Linear layer sees bf16 outputs in training and in evaluation under bf16,
    float32 otherwise; the returned model is plain float32 again; metrics.json names both."""
    if bf16_cpu is not None:
        monkeypatch.setattr(modeling, "cpu_computes_bf16", lambda: bf16_cpu)
    seen, models = [], []
    original = adapterlib.train.prepare_model

    def prepare_and_watch(recipe, model_name):
        model = original(recipe, model_name)
        first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        first_linear.register_forward_hook(
            lambda module, inputs, output: seen.append((module.training, output.dtype))
        )
        models.append(model)
        return model

    monkeypatch.setattr(adapterlib.train, "prepare_model", prepare_and_watch)
    out = tmp_path / "run"
    assert main(tiny_train_argv("lora", tiny_model_dir, tiny_data_dir, out, "--precision", asked)) == 0
    dtype = torch.bfloat16 if expected == "bf16" else torch.float32
    assert set(seen) == {(True, dtype), (False, dtype)}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == expected and metrics["recipe"]["precision"] == asked
    seen.clear()
    with torch.no_grad():
        models[0].eval()(input_ids=torch.tensor([[101, 2204, 102]]))
    assert seen == [(False, torch.float32)]
    assert all(p.dtype == torch.float32 for p in models[0].parameters())
