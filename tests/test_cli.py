"""The command line end to end, on a tiny random BERT saved to a folder, tiny hand-made data and a
few SST-2 rows; failing fast when the hub is out of reach; leaving nothing behind."""

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

import adapterlib.train
from adapterlib.cli import build_parser, grid_sizes, main, model_fingerprint, ran_in, run_key
from adapterlib.data import data_fingerprint
from adapterlib.modeling import PACKAGED_MODEL, resolve_precision
from adapterlib.train import Recipe
from conftest import tiny_train_argv

DATA = os.environ.get("ADAPTERLIB_SST2_DIR")
needs_data = pytest.mark.skipif(not DATA, reason="set ADAPTERLIB_SST2_DIR to the shared SST-2 folder")
RESULTS = Path(__file__).parents[1] / "results"
HUB_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "ADAPTERLIB_SST2_DIR", "ADAPTERLIB_MODEL")
SHARED_SST2 = "c51ed4b50954"  # data fingerprint of GLUE SST-2 train.tsv and dev.tsv


def fake_record(recipe: Recipe) -> dict:
    return {
        "method": recipe.method,
        "recipe": asdict(recipe),
        "peft_config": recipe.peft_config_dict(),
        "accuracy": 0.8,
        "evaluation_examples": 872,
        "trainable_parameters": 1_000,
        "trainable_fraction": 0.01,
        "seconds_per_step": 0.1,
        "train_seconds": 1.0,
        "versions": {"torch": "x"},
        "device": "cpu",
        "precision": "bf16" if recipe.precision == "auto" else recipe.precision,
    }


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("method", ["lora", "head"])
def test_train_then_predict(method, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--method",
            method,
            "--model",
            tiny_model_dir,
            "--train-size",
            "32",
            "--epochs",
            "2",
            "--evaluate-each-epoch",
            "--data-dir",
            DATA,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert (
        summary.startswith(f"{method}: validation accuracy")
        and "after 2 epochs" in summary
        and str(out) in summary
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no trainer/ folder, no half-written copy
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluation_examples"] == 872 and metrics["train_examples"] == 32
    assert 0 <= metrics["accuracy"] <= 1 and metrics["trainable_parameters"] < metrics["total_parameters"]
    assert (
        len(metrics["accuracy_per_epoch"]) == 2 and metrics["accuracy_per_epoch"][-1] == metrics["accuracy"]
    )
    assert metrics["precision"] == resolve_precision("auto") and metrics["processes"] == 1  # the default
    assert metrics["data_dir"] == str(Path(DATA).absolute())
    changes = metrics["changes_from_seed_recipe"]
    assert (
        changes["train_size"] == [2000, 32]
        and changes["pooling"] == ["cls", "mean"]
        and changes["epochs"] == [3.0, 2.0]
    )
    tsv = tmp_path / "few.tsv"
    tsv.write_text("sentence\tlabel\na gripping , funny film \t1\na dull mess \t0\n")
    assert main(["predict", "--checkpoint", str(out), "--file", str(tsv)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert all(line in ("positive", "negative") for line in lines[:2])
    assert lines[2].startswith("accuracy: ") and lines[2].endswith("/2)")
    assert main(["predict", "--checkpoint", str(out), "great", "awful", "fine"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3


@pytest.mark.slow
def test_one_epoch_relative_data_dir_and_no_folders_left(
    tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch, capsys
):
    """A relative --data-dir is read against the current directory; the Trainer's working folder
    is a temporary one, gone afterwards; the record keeps the data folder as an absolute path."""
    shutil.copytree(tiny_data_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    working_folders = []
    original_train = adapterlib.train.Trainer.train

    def spy_train(trainer, *args, **kwargs):
        working_folders.append(Path(trainer.args.output_dir))
        return original_train(trainer, *args, **kwargs)

    monkeypatch.setattr(adapterlib.train.Trainer, "train", spy_train)
    options = "--r", "4", "--batch-size", "16"
    assert main(tiny_train_argv("adapter", tiny_model_dir, "data", "runs/adapter", *options)) == 0
    assert "after 1 epoch |" in capsys.readouterr().out
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_dir()) == [
        "data",
        "runs",
        "runs/adapter",
    ]
    assert len(working_folders) == 1 and not working_folders[0].exists()
    metrics = json.loads((tmp_path / "runs/adapter/metrics.json").read_text())
    assert metrics["data_dir"] == str(tmp_path / "data") and metrics["train_examples"] == 64
    assert metrics["steps"] == 4 and metrics["epochs_trained"] == 1.0  # 64 examples at batch 16


@pytest.mark.slow
def test_offline_without_data_fails_in_one_line_naming_the_options(tmp_path):
    """No data folder and no hub (a proxy that refuses every connection): exit 2, one line on
    stderr naming --data-dir and $ADAPTERLIB_SST2_DIR, nothing written."""
    env = {k: v for k, v in os.environ.items() if k not in HUB_VARIABLES}
    env.update(HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", NO_PROXY="", no_proxy="")
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapterlib",
            "train",
            "--method",
            "adapter",
            "--r",
            "16",
            "--out",
            "runs/adapter",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "adapterlib train: error: no SST-2 data: pass --data-dir PATH"
    )
    assert "$ADAPTERLIB_SST2_DIR" in lines[0] and "data_dir=" not in lines[0]
    assert list(tmp_path.iterdir()) == []
    assert seconds < 30  # the hub client's retries alone take about 30 s


@pytest.mark.slow
def test_offline_checks_take_no_hub_retries(tmp_path, monkeypatch, capsys):
    """In process (imports done): the refusal comes within 5 s and never calls the hub clients."""
    for name in HUB_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setattr(
        adapterlib.train, "train_and_evaluate", lambda *a, **k: pytest.fail("training started")
    )
    started = time.perf_counter()
    assert main(["train", "--method", "adapter", "--out", str(tmp_path / "x")]) == 2
    assert (
        main(
            [
                "train",
                "--method",
                "adapter",
                "--data-dir",
                str(tmp_path),
                "--model",
                "someone/bert",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    assert time.perf_counter() - started < 5
    lines = capsys.readouterr().err.strip().splitlines()
    assert "pass --data-dir PATH" in lines[0] and "does not answer" in lines[0]
    assert (
        lines[1].startswith("adapterlib train: error: --model someone/bert is not a local folder")
        and "leave --model out" in lines[1]
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--method", "lora", "--r", "0", "--out", "{tmp}/x"],
            "argument --r: must be a positive whole number, got 0",
        ),
        (
            ["train", "--method", "adapter", "--data-dir", "{tmp}/nowhere", "--out", "{tmp}/x"],
            "does not exist",
        ),
        (["train", "--method", "adapter", "--out", "{tmp}"], "exists and is not an empty folder"),
        (["predict", "--checkpoint", "{tmp}", "text"], "not a checkpoint written by `adapterlib train`"),
    ],
)
def test_bad_arguments_exit_2_and_write_nothing(argv, message, tmp_path, capsys):
    (tmp_path / "keep").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_trainer_working_folder_is_removed_when_training_fails(tiny_model_dir, tiny_data_dir, monkeypatch):
    working_folders = []

    def failing_train(trainer, *args, **kwargs):
        working_folders.append(Path(trainer.args.output_dir))
        raise KeyboardInterrupt

    monkeypatch.setattr(adapterlib.train.Trainer, "train", failing_train)
    with pytest.raises(KeyboardInterrupt):
        adapterlib.train.train_and_evaluate(
            Recipe("head", train_size=8), tiny_model_dir, tiny_data_dir, progress=False
        )
    assert len(working_folders) == 1 and not working_folders[0].exists()


def test_count_packaged_model(capsys):
    assert main(["count", "--method", "lora", "--r", "8", "--pooling", "cls"]) == 0
    assert capsys.readouterr().out.strip() == "trainable 74,498 | total 22,788,484 | fraction 0.3269%"


def test_compare_resumes_finished_runs_and_retrains_when_a_default_changed(
    tiny_data_dir, tmp_path, monkeypatch, capsys
):
    trained = []

    def fake_train_and_evaluate(recipe, model_name, data_dir, progress):
        trained.append(recipe.method)
        return None, fake_record(recipe)

    monkeypatch.setattr(adapterlib.train, "train_and_evaluate", fake_train_and_evaluate)
    out = tmp_path / "grid"
    argv = [
        "compare",
        "--methods",
        "head",
        "adapter",
        "--seeds",
        "0",
        "--train-size",
        "32",
        "--precision",
        "fp32",
        "--data-dir",
        tiny_data_dir,
        "--out",
        str(out),
    ]
    runs = 1 + len(grid_sizes()["adapter"])  # head once, the adapter at every size
    assert main(argv) == 0 and trained == ["head"] + ["adapter"] * (runs - 1)
    assert "wrote" in capsys.readouterr().out
    assert main(argv) == 0 and len(trained) == runs  # everything finished: nothing retrains
    assert f"nothing new to train: all {runs} runs reused" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    results = json.loads((out / "results.json").read_text())
    for run in (records[1], results["runs"][1]):
        run["peft_config"]["dropout"] = 0.1  # as if r=16 had run under an older default
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (out / "results.json").write_text(json.dumps(results))
    assert main(argv) == 0 and trained[runs:] == ["adapter"]
    shown = json.loads((out / "results.json").read_text())["runs"]
    assert len(shown) == runs and all(
        r["peft_config"] is None or r["peft_config"]["dropout"] == 0.0 for r in shown
    )
    assert len((out / "runs.jsonl").read_text().splitlines()) == runs + 1  # the outdated run stays in the log
    assert (
        main(argv + ["--precision", "bf16"]) == 2 and len(trained) == runs + 1
    )  # another experiment: refused
    assert (
        "holds the results of another experiment (precision fp32 there, bf16 here)" in capsys.readouterr().err
    )


@needs_data
def test_a_dry_resume_of_the_committed_grid_retrains_only_runs_whose_recipe_changed(
    tmp_path, monkeypatch, capsys
):
    """The committed command, rerun: every run whose recipe (learning rate, pooling, full PEFT
    config) is what the code makes today is reused; the others retrain, replacing their own row
    and no other; a method with no committed run yet trains at every size and seed the command
    names. With nothing to train, no file is rewritten."""
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()}
    shown = json.loads(before["results.json"])["runs"]

    def today(run: dict) -> Recipe:
        return Recipe(
            run["method"], method_options=run["recipe"]["method_options"], seed=run["recipe"]["seed"]
        )

    outdated = sorted(
        json.dumps([r["method"], r["recipe"]["method_options"], r["recipe"]["seed"]])
        for r in shown
        if (today(r).peft_config_dict(), today(r).learning_rate, today(r).pooling)
        != (r["peft_config"], r["recipe"]["learning_rate"], r["recipe"]["pooling"])
    )
    asked = []

    def fake_train_and_evaluate(recipe, model_name, data_dir, progress):
        asked.append(json.dumps([recipe.method, recipe.method_options, recipe.seed]))
        return None, fake_record(recipe)

    monkeypatch.setattr(adapterlib.train, "train_and_evaluate", fake_train_and_evaluate)
    command = json.loads(before["results.json"])["command"].split()[1:]
    assert command[0] == "compare" and "--out" in command and "--data-dir" in command
    command[command.index("--out") + 1] = str(copy)
    command[command.index("--data-dir") + 1] = (
        DATA  # the shared SST-2 copy the runs were made on, wherever it lies
    )
    grid = build_parser().parse_args(command)
    new = [
        json.dumps([m, options, seed])
        for m in grid.methods
        if m not in {r["method"] for r in shown}
        for options in grid_sizes()[m]
        for seed in grid.seeds
    ]
    assert main(command) == 0
    assert sorted(asked) == sorted(outdated + new)
    if asked:
        assert len(json.loads((copy / "results.json").read_text())["runs"]) == len(shown) + len(new)
    else:
        assert f"nothing new to train: all {len(shown)} runs reused" in capsys.readouterr().out
        assert {p.name: p.read_bytes() for p in copy.iterdir() if p.is_file()} == before


def test_committed_runs_carry_the_fingerprints_of_the_shared_data_and_the_packaged_model():
    """Every committed run was made on the shared SST-2 copy and the packaged model; the stamp says so."""
    runs = [json.loads(line) for line in (RESULTS / "runs.jsonl").read_text().splitlines()]
    assert {(r["data_fingerprint"], r["model_fingerprint"]) for r in runs} == {
        (SHARED_SST2, model_fingerprint(PACKAGED_MODEL))
    }
    if DATA:
        assert data_fingerprint(DATA) == SHARED_SST2


def test_resume_key_treats_records_from_before_the_precision_field_as_fp32():
    recipe = Recipe("adapter", method_options={"r": 16})
    old = asdict(recipe)
    del old["precision"]
    prints = {"data_fingerprint": "d" * 12, "model_fingerprint": "m" * 12}
    key = run_key(asdict(recipe), recipe.peft_config_dict(), "fp32", prints)
    assert run_key(old, recipe.peft_config_dict(), ran_in({"mixed_precision": "none"}), prints) == key
    assert run_key(old, recipe.peft_config_dict(), ran_in({"mixed_precision": "bf16"}), prints) != key
    assert ran_in({"precision": "bf16", "recipe": asdict(Recipe("head", precision="auto"))}) == "bf16"
    for name in prints:
        assert run_key(asdict(recipe), recipe.peft_config_dict(), "fp32", prints | {name: "0" * 12}) != key
