"""The command line end to end, on a tiny random BERT saved to a folder and a few SST-2 rows."""

import json
import os

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from adapterlib.cli import main
from adapterlib.modeling import PACKAGED_MODEL, load_tokenizer

DATA = os.environ.get("ADAPTERLIB_SST2_DIR")
needs_data = pytest.mark.skipif(not DATA, reason="set ADAPTERLIB_SST2_DIR to the shared SST-2 folder")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    load_tokenizer(PACKAGED_MODEL).save_pretrained(folder)
    return str(folder)


@needs_data
@pytest.mark.parametrize("method", ["lora", "head"])
def test_train_then_predict(method, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--method", method, "--model", tiny_model_dir, "--train-size", "32", "--epochs", "2",
                 "--evaluate-each-epoch", "--data-dir", DATA, "--out", str(out)])
    assert code == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f"{method}: validation accuracy") and str(out) in summary
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluation_examples"] == 872 and metrics["train_examples"] == 32
    assert 0 <= metrics["accuracy"] <= 1 and metrics["trainable_parameters"] < metrics["total_parameters"]
    assert len(metrics["accuracy_per_epoch"]) == 2 and metrics["accuracy_per_epoch"][-1] == metrics["accuracy"]
    changes = metrics["changes_from_seed_recipe"]
    assert changes["train_size"] == [2000, 32] and changes["pooling"] == ["cls", "mean"] and changes["epochs"] == [3.0, 2.0]
    tsv = tmp_path / "few.tsv"
    tsv.write_text("sentence\tlabel\na gripping , funny film \t1\na dull mess \t0\n")
    assert main(["predict", "--checkpoint", str(out), "--file", str(tsv)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(line in ("positive", "negative") for line in lines[:2])
    assert lines[2].startswith("accuracy: ") and lines[2].endswith("/2)")
    assert main(["predict", "--checkpoint", str(out), "great", "awful", "fine"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--method", "lora", "--r", "0", "--out", "{tmp}/x"], "r must be a positive integer"),
        (["train", "--method", "adapter", "--data-dir", "{tmp}/nowhere", "--out", "{tmp}/x"], "does not exist"),
        (["predict", "--checkpoint", "{tmp}", "text"], "not a checkpoint written by `adapterlib train`"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_count_packaged_model(capsys):
    assert main(["count", "--method", "lora", "--r", "8", "--pooling", "cls"]) == 0
    assert capsys.readouterr().out.strip() == "trainable 74,498 | total 22,788,484 | fraction 0.3269%"


def test_compare_resumes_finished_runs_and_retrains_when_a_default_changed(tmp_path, monkeypatch, capsys):
    import adapterlib.cli as cli
    from dataclasses import asdict

    trained = []

    def fake_train_and_evaluate(recipe, model_name, data_dir, output_dir, progress):
        trained.append(recipe.method)
        return None, {
            "method": recipe.method, "recipe": asdict(recipe), "peft_config": recipe.peft_config_dict(),
            "accuracy": 0.8, "evaluation_examples": 872, "trainable_parameters": 1_000, "trainable_fraction": 0.01,
            "seconds_per_step": 0.1, "train_seconds": 1.0, "versions": {"torch": "x"}, "device": "cpu",
        }

    monkeypatch.setattr(cli, "train_and_evaluate", fake_train_and_evaluate)
    argv = ["compare", "--methods", "head", "adapter", "--seeds", "0", "--out", str(tmp_path)]
    runs = 1 + len(cli.GRID_SIZES["adapter"])  # head once, the adapter at every size
    assert main(argv) == 0 and trained == ["head"] + ["adapter"] * (runs - 1)
    assert main(argv) == 0 and len(trained) == runs  # everything finished: nothing retrains
    log = tmp_path / "runs.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    records[1]["peft_config"]["dropout"] = 0.1  # as if r=16 had run under an older default
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(argv) == 0 and trained[runs:] == ["adapter"]
    assert "wrote" in capsys.readouterr().out
