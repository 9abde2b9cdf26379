"""A user's mistake on the command line: one line on stderr, ``adapterlib <command>: error: ...``,
exit code 2, and every file and folder involved left as it was. Nothing here trains: a mistake
must be found before training starts (training is replaced by a failure where it could start)."""

import errno
import json
import os
import shutil
import stat
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from test_cli import DATA, RESULTS, fake_record, needs_data
from transformers import BertConfig, GPT2Config, GPT2Model

import adapterlib.train
from adapterlib.cli import TRAINED_TENSORS, main, save_trained, train_command
from adapterlib.methods import get_baseline
from adapterlib.modeling import load_classifier, resolve_precision
from adapterlib.peft_model import get_peft_model
from adapterlib.train import Recipe
from conftest import write_tiny_sst2

HEADER = "sentence\tlabel\n"
DEFAULT_PRECISION = resolve_precision("auto")  # what compare runs in here by default
OTHER_PRECISION = "fp32" if DEFAULT_PRECISION == "bf16" else "bf16"


def refused(argv: list, capsys) -> str:
    """Run ``main(argv)``; it must exit 2 with exactly one stderr line; returns that line."""
    capsys.readouterr()  # what came before
    code = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"adapterlib {argv[0]}: error: "), lines[0]
    return lines[0]


def contents(folder: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``folder``: what 'untouched' means."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    for name in ("train_and_evaluate", "train_run"):
        monkeypatch.setattr(adapterlib.train, name, lambda *a, **k: pytest.fail("training started"))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return Path(write_tiny_sst2(tmp_path / "data", train=2_000, dev=4))  # the default --train-size


# ------------------------------------------------------------------ train: the data


@pytest.mark.parametrize(
    "train, message",
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe",
            "train.tsv is not UTF-8 text: line 1 holds the byte 0x89",
        ),
        (
            f"{HEADER}a good film\t1\ncaf\u00e9 cr\u00e8me\t1\n".encode("latin-1"),
            "train.tsv is not UTF-8 text: line 3 holds the byte 0xe9",
        ),
        (HEADER.encode(), "train.tsv has the header but no rows"),
        (b"", "train.tsv is empty"),
        (
            f"{HEADER}good\t1\nfine\tfilm\t1\n".encode(),
            "train.tsv, line 3: expected 2 tab-separated fields, the sentence and its label; found 3",
        ),
        (
            f"{HEADER}good\n".encode(),
            "train.tsv, line 2: expected 2 tab-separated fields, the sentence and its label; found 1",
        ),
        (b"sentence\ngood\n", "train.tsv, line 1: header is 'sentence'; expected 'sentence<TAB>label'"),
        (b"label\tsentence\n1\tgood\n", "train.tsv, line 1: header is 'label\\tsentence'"),
        (f"{HEADER}good\t1\nbad\t2\n".encode(), "train.tsv, line 3: label '2' is not 0 or 1"),
    ],
    ids=[
        "binary",
        "latin-1",
        "header-only",
        "empty",
        "three-fields",
        "one-field",
        "no-label-column",
        "swapped-header",
        "label-2",
    ],
)
def test_bad_training_file_is_named_with_its_line(train, message, data_dir, tmp_path, capsys):
    (data_dir / "train.tsv").write_bytes(train)
    before = contents(data_dir)
    line = refused(["train", "--method", "head", "--data-dir", data_dir, "--out", tmp_path / "run"], capsys)
    assert message in line and str(data_dir / "train.tsv") in line
    assert contents(data_dir) == before and not (tmp_path / "run").exists()


def test_folder_without_the_split_files(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    line = refused(
        ["train", "--method", "head", "--data-dir", tmp_path / "data", "--out", tmp_path / "run"], capsys
    )
    assert "has no train.tsv; a GLUE-format folder holds train.tsv and dev.tsv" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_byte_order_mark_is_read_like_the_loader_reads_it(data_dir, tmp_path, capsys):
    """The check reads what the datasets loader reads: it drops a UTF-8 byte-order mark."""
    path = data_dir / "train.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    line = refused(
        [
            "train",
            "--method",
            "head",
            "--data-dir",
            data_dir,
            "--train-size",
            2_001,
            "--out",
            tmp_path / "run",
        ],
        capsys,
    )
    assert (
        "--train-size 2,001 is more than the 2,000 rows of the training split; pass at most 2000, or 0 for all of them"
        in line
    )


# ------------------------------------------------------------------ train: numbers, folders, model


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--train-size", "-5", "argument --train-size: must be 0 or more, got -5"),
        ("--train-size", "2001", "--train-size 2,001 is more than the 2,000 rows"),
        ("--batch-size", "0", "argument --batch-size: must be a positive whole number, got 0"),
        ("--batch-size", "-3", "argument --batch-size: must be a positive whole number, got -3"),
        ("--batch-size", "2.5", "argument --batch-size: expected a whole number, got '2.5'"),
        ("--epochs", "0", "argument --epochs: must be a number greater than 0, got 0"),
        ("--epochs", "-1", "argument --epochs: must be a number greater than 0, got -1"),
        ("--epochs", "nan", "argument --epochs: must be a number greater than 0, got nan"),
        ("--lr", "-0.001", "argument --lr: must be a number greater than 0"),
    ],
)
def test_bad_numbers(option, value, message, data_dir, tmp_path, capsys):
    line = refused(
        ["train", "--method", "lora", option, value, "--data-dir", data_dir, "--out", tmp_path / "run"],
        capsys,
    )
    assert message in line
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_or_inside_one(data_dir, tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("keep me\n")
    base = ["train", "--method", "head", "--data-dir", data_dir, "--out"]
    assert f"--out {file} is a file; name a new folder" in refused(base + [file], capsys)
    assert f"lies inside {file}, which is a file" in refused(base + [file / "run"], capsys)
    assert file.read_text() == "keep me\n"


def write_gpt2(folder: Path) -> Path:
    GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=4)).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "make_model, message",
    [
        (
            lambda tmp: "someone/no-such-model",
            "--model someone/no-such-model is neither a model folder nor a model on the "
            "Hugging Face hub in the local cache ($HF_HUB_OFFLINE is set); pass --model PATH",
        ),
        (
            lambda tmp: tmp / "data",
            "is a folder without config.json or weights (model.safetensors), so not a model folder",
        ),
        (
            lambda tmp: (
                BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4).save_pretrained(
                    tmp / "m"
                )
                or tmp / "m"
            ),
            "is a folder without weights (model.safetensors), so not a model folder",
        ),
        (lambda tmp: write_gpt2(tmp / "gpt2"), "(gpt2) cannot be built as a classifier with --pooling mean"),
    ],
    ids=["unknown-name", "data-folder", "config-only", "gpt2"],
)
def test_bad_model_is_refused_before_training(make_model, message, data_dir, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub name is looked up in the local cache only
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = make_model(tmp_path)
    before = contents(tmp_path)
    line = refused(
        ["train", "--method", "adapter", "--model", model, "--data-dir", data_dir, "--out", tmp_path / "run"],
        capsys,
    )
    assert message in line
    assert contents(tmp_path) == before


def test_a_model_outside_the_bert_family(tmp_path, capsys):
    line = refused(
        ["count", "--method", "lora", "--pooling", "cls", "--model", write_gpt2(tmp_path / "gpt2")], capsys
    )
    assert "GPT2ForSequenceClassification is not a supported model family" in line


# ------------------------------------------------------------------ method options


@pytest.mark.parametrize(
    "method, option, value, takes",
    [
        ("prefix", "--r", "8", "--num-virtual-tokens"),
        ("adapter", "--num-virtual-tokens", "10", "--r, --placement"),
        ("lora", "--num-virtual-tokens", "10", "--r, --target-modules"),
        ("lora", "--placement", "houlsby", "--r, --target-modules"),
        ("prefix", "--placement", "houlsby", "--num-virtual-tokens"),
        ("adapter", "--target-modules", "query", "--r, --placement"),
        ("prefix", "--target-modules", "query", "--num-virtual-tokens"),
        ("head", "--r", "8", None),
    ],
)
@pytest.mark.parametrize("command", ["train", "count"])
def test_an_option_the_method_does_not_use(command, method, option, value, takes, data_dir, tmp_path, capsys):
    argv = [command, "--method", method, option, value]
    if command == "train":
        argv += ["--data-dir", data_dir, "--out", tmp_path / "run"]
    line = refused(argv, capsys)
    assert f"{option} does not apply to --method {method}" in line and f"leave {option} out" in line
    assert (f"its options are {takes}" if takes else "it takes no method options") in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--method", "adapter", "--r", "1000"], "r=1000 is larger than the hidden size (384)"),
        (["--method", "lora", "--target-modules", "foo"], "target_modules ['foo'] match no Linear layer"),
        (["--method", "lora", "--r", "0"], "argument --r: must be a positive whole number, got 0"),
    ],
)
@pytest.mark.parametrize("command", ["train", "count"])
def test_count_refuses_what_train_refuses(command, options, message, data_dir, tmp_path, capsys):
    argv = [command, *options] + (
        ["--data-dir", data_dir, "--out", tmp_path / "run"] if command == "train" else []
    )
    assert message in refused(argv, capsys)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_prints_one_line_exit_130_and_a_rerun_works(data_dir, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    argv = ["train", "--method", "head", "--data-dir", str(data_dir), "--out", str(out)]
    monkeypatch.setattr(adapterlib.train, "train_run", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "adapterlib train: interrupted; nothing was saved"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]

    monkeypatch.setattr(adapterlib.train, "train_run", finished_run)
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.safetensors"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["data_fingerprint"]) == 12 and len(metrics["model_fingerprint"]) == 12


def finished_run(spec, *args, **kwargs):
    """Training replaced by a finished run at once: a small model and its record."""
    record = fake_record(spec.recipe) | {"model": "m", "total_parameters": 6_000}
    return torch.nn.Linear(2, 2), record | {"epochs_trained": spec.epochs_trained, "steps": spec.steps}


def test_epochs_shorter_than_one_step_are_refused(data_dir, tmp_path, capsys):
    argv = ["train", "--method", "bitfit", "--epochs", "0.01", "--train-size", "64", "--data-dir", data_dir]
    line = refused([*argv, "--out", tmp_path / "run"], capsys)
    assert (
        "--epochs: 0.01 epochs is less than one step (4 steps an epoch: 64 examples at batch size 16); "
        "pass at least 0.25 epochs" in line
    )
    argv = [*argv[:4], "0.5", "--train-size", "16", "--data-dir", data_dir]
    line = refused([*argv, "--out", tmp_path / "run"], capsys)
    assert "(1 step an epoch: 16 examples at batch size 16); pass at least 1 epoch." in line
    assert not (tmp_path / "run").exists()


def test_the_epochs_recorded_are_the_epochs_trained(data_dir, tmp_path, monkeypatch, capsys):
    """0.3 epochs of 4 steps is 1.2 steps: training takes 2 whole steps, half an epoch, and says so."""
    monkeypatch.setattr(adapterlib.train, "train_run", finished_run)
    out = tmp_path / "run"
    argv = ["train", "--method", "bitfit", "--epochs", "0.3", "--train-size", "64", "--data-dir", data_dir]
    assert main([str(a) for a in [*argv, "--out", out]]) == 0
    assert json.loads((out / "metrics.json").read_text())["epochs_trained"] == 0.5
    assert "after 0.5 epochs (2 steps: --epochs 0.3 ends inside a step" in capsys.readouterr().out


def test_a_second_train_into_the_same_out_is_refused_while_the_first_runs(
    data_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    argv = [str(a) for a in ["train", "--method", "head", "--data-dir", data_dir, "--out", out]]
    second = []

    def first_run(spec, *args, **kwargs):
        second.append(main(argv))  # started while the first trains
        second.append(capsys.readouterr().err)
        return finished_run(spec)

    monkeypatch.setattr(adapterlib.train, "train_run", first_run)
    assert main(argv) == 0
    assert second[0] == 2 and f"--out {out} is being written by another `adapterlib train`" in second[1]
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.safetensors"]


def test_under_torchrun_only_the_main_process_checks_and_claims_out(data_dir, tmp_path, monkeypatch, capsys):
    """Every process of a ``torchrun`` runs ``train``, and the main one (rank 0) claims --out at once:
    another process that looked at --out after that would find the claim of a live process and stop.
    The others neither check nor claim --out, whenever they start; the main one refuses a claimed one."""
    out = tmp_path / "run"
    out.mkdir()
    (out / train_command.CLAIM).write_text(f"{os.getpid()}\n")  # rank 0 has claimed it and runs
    argv = ["train", "--method", "head", "--data-dir", data_dir, "--out", out]
    monkeypatch.setattr(adapterlib.train, "train_run", finished_run)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main([str(a) for a in argv]) == 0
    assert sorted(p.name for p in out.iterdir()) == [train_command.CLAIM]  # nothing written, claim kept
    monkeypatch.setenv("RANK", "0")
    assert "is being written by another `adapterlib train`" in refused(argv, capsys)


def test_the_claim_of_a_train_run_that_died_is_named(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / train_command.CLAIM).write_text("999999999\n")  # no such process
    line = refused(["train", "--method", "head", "--data-dir", data_dir, "--out", out], capsys)
    assert "an `adapterlib train` (process 999999999) left when it stopped before finishing; remove" in line


def test_a_run_that_would_not_fit_in_memory_is_refused_before_anything_is_allocated(
    data_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    base = ["train", "--method", "prefix", "--data-dir", data_dir, "--out", out]
    line = refused([*base, "--num-virtual-tokens", "1000000"], capsys)
    assert "--method prefix with these sizes needs about" in line and "GiB this process may use" in line
    assert "1,000,000 added keys" in line and not out.exists()


def test_memory_and_disk_are_checked_against_what_this_process_may_use(
    data_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    argv = ["train", "--method", "head", "--data-dir", data_dir, "--out", out]
    monkeypatch.setattr(train_command, "memory_limit", lambda: 50 * 2**20)
    assert "more than the 0.0 GiB this process may use" in refused(argv, capsys)
    monkeypatch.setattr(train_command, "memory_limit", lambda: None)
    monkeypatch.setattr(train_command.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1, 1, 0))
    assert f"--out {out}: the disk has 0.0 MiB free" in refused(argv, capsys)
    assert not out.exists()


def test_count_builds_nothing_whatever_the_sizes(capsys):
    """1e11 prefix tokens would be 1.8 PB of weights; count gives their number at once."""
    assert main(["count", "--method", "prefix", "--num-virtual-tokens", "100000000000"]) == 0
    trainable = 6 * 2 * 100_000_000_000 * 384 + 384 * 2 + 2
    assert capsys.readouterr().out.startswith(f"trainable {trainable:,} | total ")


def test_a_finished_run_whose_final_move_fails_is_kept(data_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(adapterlib.train, "train_run", finished_run)
    out = tmp_path / "run"

    def refuse(self, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(train_command.Path, "rename", refuse)
    assert main(["train", "--method", "head", "--data-dir", str(data_dir), "--out", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    kept = Path(line.split("it is kept in ")[1].split(":")[0])
    assert "the run finished but could not be moved to --out" in line
    assert sorted(p.name for p in kept.iterdir()) == ["metrics.json", "model.safetensors"]


def test_a_finished_run_the_full_disk_keeps_elsewhere_releases_out(data_dir, tmp_path, monkeypatch, capsys):
    """The disk beside --out fills during the save: the run is kept in the temporary folder, with
    the umask's permissions, and --out is left as it was before, so the same command runs again."""
    monkeypatch.setattr(adapterlib.train, "train_run", finished_run)
    out = tmp_path / "run"
    write_run = train_command.write_run

    def disk_full_beside_out(model, folder, record):
        if folder.parent == out.parent:
            raise OSError(errno.ENOSPC, "No space left on device")
        write_run(model, folder, record)

    monkeypatch.setattr(train_command, "write_run", disk_full_beside_out)
    argv = ["train", "--method", "head", "--data-dir", str(data_dir), "--out", str(out)]
    before = os.umask(0o027)
    try:
        assert main(argv) == 1
    finally:
        os.umask(before)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "could not be written beside --out" in line and "No space left on device" in line
    kept = Path(line.split("it is kept in ")[1].split(":")[0])
    assert sorted(p.name for p in kept.iterdir()) == ["metrics.json", "model.safetensors"]
    assert stat.S_IMODE(kept.stat().st_mode) == 0o750
    shutil.rmtree(kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no --out, no hidden folder

    monkeypatch.setattr(train_command, "write_run", write_run)
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.safetensors"]


def test_out_gets_the_permissions_of_the_users_umask(data_dir, tmp_path, monkeypatch):
    claim_modes = []

    def run_looking_at_the_claim(spec, *args, **kwargs):
        claim_modes.append(stat.S_IMODE((tmp_path / "run" / train_command.CLAIM).stat().st_mode))
        return finished_run(spec)

    monkeypatch.setattr(adapterlib.train, "train_run", run_looking_at_the_claim)
    before = os.umask(0o027)
    try:
        assert (
            main(["train", "--method", "head", "--data-dir", str(data_dir), "--out", str(tmp_path / "run")])
            == 0
        )
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o750
    assert claim_modes == [0o640]  # a file: readable and writable as the umask allows, not executable


# ------------------------------------------------------------------ predict: the input


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Untrained but complete checkpoints of the tiny BERT, as `train` writes them: head-only
    runs with mean and with cls pooling, and a LoRA run."""
    folder = tmp_path_factory.mktemp("checkpoints")
    made = {}
    for name, method, pooling in [
        ("head-mean", "head", "mean"),
        ("head-cls", "head", "cls"),
        ("lora", "lora", "mean"),
    ]:
        recipe = Recipe(method, pooling=pooling)
        model = load_classifier(tiny_model_dir, pooling=pooling)
        if method == "lora":
            model = get_peft_model(model, recipe.peft_config())
        else:
            get_baseline(method).freeze(model)
        record = {
            "method": method,
            "recipe": asdict(recipe),
            "peft_config": recipe.peft_config_dict(),
            "model": tiny_model_dir,
        }
        save_trained(model, folder / name, record)
        made[name] = folder / name
    return made


@pytest.fixture
def checkpoint(checkpoints, tmp_path) -> Path:
    """A copy of the mean-pooling head checkpoint that a test may damage."""
    return Path(shutil.copytree(checkpoints["head-mean"], tmp_path / "checkpoint"))


def test_file_and_text_together(checkpoint, tmp_path, capsys):
    file = tmp_path / "in.txt"
    file.write_text("a fine film\n")
    line = refused(["predict", "--checkpoint", checkpoint, "--file", file, "a dull film"], capsys)
    assert "give sentences on the command line or in --file F, not both" in line


@pytest.mark.parametrize(
    "text", ["", "\n\n  \n", "sentence\tlabel\n\n"], ids=["empty", "blank-lines", "header-only"]
)
def test_file_without_sentences(text, checkpoint, tmp_path, capsys):
    file = tmp_path / "in.tsv"
    file.write_text(text)
    assert f"--file {file} holds no sentences" in refused(
        ["predict", "--checkpoint", checkpoint, "--file", file], capsys
    )


def test_file_that_is_not_utf8(checkpoint, tmp_path, capsys):
    file = tmp_path / "in.txt"
    file.write_bytes("a fine film\nun film m\u00e9diocre\n".encode("latin-1"))
    line = refused(["predict", "--checkpoint", checkpoint, "--file", file], capsys)
    assert f"--file {file} is not UTF-8 text: line 2 holds the byte 0xe9; save the file as UTF-8" in line


def test_tsv_with_byte_order_mark_and_named_labels(checkpoint, tmp_path, capsys):
    file = tmp_path / "in.tsv"
    file.write_bytes(
        "\ufeffsentence\tlabel\na gripping film\tPositive\na dull mess\tNEGATIVE\nfine\t1\n".encode()
    )
    assert main(["predict", "--checkpoint", str(checkpoint), "--file", str(file)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and set(lines[:3]) <= {"positive", "negative"}
    assert lines[3].startswith("accuracy: ") and lines[3].endswith("/3)")


@pytest.mark.parametrize(
    "text, sentences, labelled",
    [
        ("good film\t1\n", 1, True),
        ("good film\tpositive\nbad plot\t0\n", 2, True),
        ("SENTENCE\tLabel\ngood film\t1\n", 1, True),
        ("Index\tSentence\n1\tgood film\n", 1, False),
        ("good film\nbad plot\n", 2, False),
    ],
    ids=["one-row-no-header", "no-header", "header-upper-case", "header-without-label", "plain-lines"],
)
def test_file_rows_are_read_by_the_stated_rule(text, sentences, labelled, checkpoint, tmp_path, capsys):
    file = tmp_path / "in.tsv"
    file.write_text(text)
    assert main(["predict", "--checkpoint", str(checkpoint), "--file", str(file)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == sentences + labelled and set(lines[:sentences]) <= {"positive", "negative"}
    assert lines[-1].endswith(f"/{sentences})") == labelled


def test_a_headerless_file_with_tabs_holds_labelled_rows_only(checkpoint, tmp_path, capsys):
    file = tmp_path / "in.tsv"
    file.write_text("good film\t1\nbad plot\n")
    assert f"--file {file}, line 2 has no tab, but other lines do" in refused(
        ["predict", "--checkpoint", checkpoint, "--file", file], capsys
    )
    file.write_text("good film\tgreat\n")
    assert f"--file {file}, line 1: label 'great' is not 0, 1, negative or positive" in refused(
        ["predict", "--checkpoint", checkpoint, "--file", file], capsys
    )


@pytest.mark.parametrize(
    "rows, message",
    [
        ("good\tmaybe\n", "line 2: label 'maybe' is not 0, 1, negative or positive"),
        ("good\t1\nbad\t0\tx\n", "line 3: found 3 tab-separated fields where the header names 2"),
    ],
)
def test_bad_rows_in_a_labelled_file(rows, message, checkpoint, tmp_path, capsys):
    file = tmp_path / "in.tsv"
    file.write_text(HEADER + rows)
    assert f"--file {file}, {message}" in refused(
        ["predict", "--checkpoint", checkpoint, "--file", file], capsys
    )


# ------------------------------------------------------------------ predict: the checkpoint


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    "source, damage, message",
    [
        ("head-mean", lambda d: truncate(d / TRAINED_TENSORS), "model.safetensors cannot be read"),
        (
            "lora",
            lambda d: truncate(d / "adapter_model.safetensors"),
            "adapter_model.safetensors cannot be read",
        ),
        (
            "head-mean",
            lambda d: (d / "metrics.json").write_text("{not json"),
            "metrics.json is not valid JSON",
        ),
        (
            "head-mean",
            lambda d: (d / "metrics.json").write_text('{"method": "head", "model": "x"}'),
            "metrics.json lacks the method, model or recipe",
        ),
        (
            "head-mean",
            lambda d: (d / "metrics.json").write_text(
                '{"method": "sparse", "model": "x", "recipe": {"pooling": "mean"}}'
            ),
            "method 'sparse' is not known",
        ),
        (
            "lora",
            lambda d: (d / "adapter_model.safetensors").unlink(),
            "has no adapter_model.safetensors, which a --method lora checkpoint holds",
        ),
    ],
    ids=[
        "truncated-tensors",
        "truncated-adapter",
        "metrics-not-json",
        "metrics-without-recipe",
        "unknown-method",
        "adapter-weights-missing",
    ],
)
def test_damaged_checkpoint(source, damage, message, checkpoints, tmp_path, capsys):
    folder = Path(shutil.copytree(checkpoints[source], tmp_path / "checkpoint"))
    damage(folder)
    line = predict_refuses(folder, capsys)
    assert message in line and ("train again into a new folder" in line or "use one of" in line)


def predict_refuses(folder: Path, capsys) -> str:
    """``predict`` from ``folder`` refuses in one line and leaves the folder as it was; the line."""
    before = contents(folder)
    line = refused(["predict", "--checkpoint", folder, "a fine film"], capsys)
    assert contents(folder) == before
    return line


def rewrite_metrics(folder: Path, change) -> None:
    metrics = json.loads((folder / "metrics.json").read_text())
    change(metrics)
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize(
    "source, disagree, message",
    [
        (
            "head-mean",
            lambda d, cps: shutil.copy(cps["lora"] / "adapter_config.json", d),
            "metrics.json says --method head, but the folder also holds adapter_config.json",
        ),
        (
            "lora",
            lambda d, cps: shutil.copy(cps["head-mean"] / TRAINED_TENSORS, d),
            "metrics.json says --method lora, but the folder also holds model.safetensors",
        ),
        (
            "head-mean",
            lambda d, cps: rewrite_metrics(d, lambda m: m["recipe"].update(pooling="cls")),
            "has no trained pooler (bert.pooler.*), which --pooling cls trains, but metrics.json records pooling 'cls'",
        ),
        (
            "head-cls",
            lambda d, cps: rewrite_metrics(d, lambda m: m["recipe"].update(pooling="mean")),
            "holds a trained pooler (bert.pooler.*), which only --pooling cls trains, but metrics.json "
            "records pooling 'mean'",
        ),
        (
            "head-mean",
            lambda d, cps: rewrite_metrics(d, lambda m: m.update(method="full")),
            "does not hold the tensors a --method full run trains",
        ),
        (
            "lora",
            lambda d, cps: rewrite_metrics(d, lambda m: m.update(method="adapter")),
            "adapter_config.json describes a lora adapter, but metrics.json says --method adapter",
        ),
    ],
    ids=[
        "head-with-adapter-config",
        "lora-with-model-tensors",
        "says-cls-weights-mean",
        "says-mean-weights-cls",
        "says-full-weights-head",
        "says-adapter-files-lora",
    ],
)
def test_files_that_disagree_are_refused(source, disagree, message, checkpoints, tmp_path, capsys):
    folder = Path(shutil.copytree(checkpoints[source], tmp_path / "checkpoint"))
    disagree(folder, checkpoints)
    line = predict_refuses(folder, capsys)
    assert message in line and "come from different runs" in line


def test_intact_checkpoints_predict(checkpoints, capsys):
    for folder in checkpoints.values():
        assert main(["predict", "--checkpoint", str(folder), "a fine film", "a dull film"]) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == 2


# ------------------------------------------------------------------ compare


def compare_argv(data_dir, out, *extra) -> list[str]:
    return [
        "compare",
        "--methods",
        "head",
        "--seeds",
        "0",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture
def fake_training(monkeypatch) -> list[Recipe]:
    """Training replaced by a record made at once; the list of recipes it was asked for."""
    trained = []

    def fake(recipe, model_name, data_dir, progress):
        trained.append(recipe)
        return None, fake_record(recipe)

    monkeypatch.setattr(adapterlib.train, "train_and_evaluate", fake)
    return trained


@pytest.mark.parametrize("field", ["data_fingerprint", "model_fingerprint"])
def test_a_run_on_other_data_or_another_model_is_kept_but_not_reused(
    field, fake_training, data_dir, tmp_path, capsys
):
    out = tmp_path / "grid"
    assert main(compare_argv(data_dir, out)) == 0 and len(fake_training) == 1
    log = out / "runs.jsonl"
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(record[field]) == 12
    elsewhere = record | {field: "000000000000", "accuracy": 0.5}
    log.write_text(json.dumps(elsewhere) + "\n")  # as if made elsewhere, before anything here
    (out / "results.json").unlink()
    capsys.readouterr()
    assert main(compare_argv(data_dir, out)) == 0 and len(fake_training) == 2  # not reused: trained again
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert runs[0] == elsewhere and runs[1][field] == record[field]  # the other run stays in runs.jsonl
    shown = json.loads((out / "results.json").read_text())["runs"]
    assert [r["accuracy"] for r in shown] == [0.8]  # the table shows only the run on this data and model
    before = contents(out)
    assert main(compare_argv(data_dir, out)) == 0 and len(fake_training) == 2  # the same fingerprints: reused
    assert "nothing new to train: all 1 run reused" in capsys.readouterr().out
    assert contents(out) == before


def test_a_smaller_grid_keeps_every_run_in_the_table(fake_training, data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(compare_argv(data_dir, out, "--methods", "head", "prefix", "--seeds", "0", "1")) == 0
    assert len(fake_training) == 8
    before = contents(out)
    assert main(compare_argv(data_dir, out)) == 0 and len(fake_training) == 8
    assert "nothing new to train: all 1 run reused" in capsys.readouterr().out
    assert contents(out) == before
    assert main(compare_argv(data_dir, out, "--seeds", "2")) == 0 and len(fake_training) == 9
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 9  # one more, none dropped


def test_a_shown_run_whose_default_changed_stays_until_it_is_retrained(
    fake_training, data_dir, tmp_path, capsys
):
    out = tmp_path / "grid"
    assert main(compare_argv(data_dir, out, "--methods", "head", "adapter")) == 0 and len(fake_training) == 4
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    results = json.loads((out / "results.json").read_text())
    assert runs[1]["recipe"]["method_options"] == {"r": 16} == results["runs"][1]["recipe"]["method_options"]
    for run in (runs[1], results["runs"][1]):
        run["peft_config"]["dropout"] = 0.1  # as if adapter r=16 had run under an older default
    (out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in runs))
    (out / "results.json").write_text(json.dumps(results))
    before = contents(out)
    assert (
        main(compare_argv(data_dir, out)) == 0 and len(fake_training) == 4
    )  # head only: the old run stays shown
    assert contents(out) == before
    assert main(compare_argv(data_dir, out, "--methods", "adapter")) == 0 and len(fake_training) == 5
    shown = json.loads((out / "results.json").read_text())["runs"]
    assert len(shown) == 4 and all(
        r["peft_config"] is None or r["peft_config"]["dropout"] == 0.0 for r in shown
    )


@needs_data
def test_a_smaller_grid_leaves_the_committed_results_byte_identical(tmp_path, capsys):
    copy = Path(shutil.copytree(RESULTS, tmp_path / "results"))
    before = contents(copy)
    assert main(["compare", "--methods", "head", "--seeds", "0", "--data-dir", DATA, "--out", str(copy)]) == 0
    assert "nothing new to train: all 1 run reused" in capsys.readouterr().out
    assert contents(copy) == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--epochs", "1"], "--epochs 3.0 there, 1.0 here"),
        (["--train-size", "10"], "--train-size 2000 there, 10 here"),
        (["--precision", OTHER_PRECISION], f"precision {DEFAULT_PRECISION} there, {OTHER_PRECISION} here"),
    ],
)
def test_results_of_other_settings_are_refused(extra, message, fake_training, data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(compare_argv(data_dir, out)) == 0
    before = contents(out)
    line = refused(compare_argv(data_dir, out, *extra), capsys)
    assert (
        "holds the results of another experiment" in line and message in line and "choose a new --out" in line
    )
    assert contents(out) == before and len(fake_training) == 1


def test_results_on_other_data_are_refused(fake_training, data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(compare_argv(data_dir, out)) == 0
    (data_dir / "dev.tsv").write_text(HEADER + "another sentence\t1\n")
    before = contents(out)
    assert "data fingerprint" in refused(compare_argv(data_dir, out), capsys)
    assert contents(out) == before and len(fake_training) == 1


def test_results_whose_runs_log_is_missing_are_refused(fake_training, data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(compare_argv(data_dir, out)) == 0
    (out / "runs.jsonl").unlink()
    before = contents(out)
    assert "runs.jsonl lacks runs that" in refused(compare_argv(data_dir, out), capsys)
    assert contents(out) == before and len(fake_training) == 1


def test_compare_out_that_is_a_file(data_dir, tmp_path, capsys):
    file = tmp_path / "results"
    file.write_text("keep me\n")
    assert f"--out {file} is a file" in refused(compare_argv(data_dir, file), capsys)
    assert file.read_text() == "keep me\n"


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("runs.jsonl", "{oops\n", "runs.jsonl, line 1 is not JSON"),
        ("runs.jsonl", '{"accuracy": 0.9}\n', "runs.jsonl, line 1 is not a run record"),
        ("results.json", "[1, 2]", "results.json holds a JSON list, not an object"),
        ("results.json", '{"runs": "oops"}', 'results.json: its "runs" is not a list'),
        (
            "results.json",
            '{"runs": [{"method": "lora"}]}',
            'results.json: its "runs" entry 0 is not a run record',
        ),
    ],
)
def test_damaged_results_folder(name, text, message, data_dir, tmp_path, capsys):
    out = tmp_path / "grid"
    out.mkdir()
    (out / name).write_text(text)
    assert message in refused(compare_argv(data_dir, out), capsys)
    assert contents(out) == {name: text.encode()}


def test_a_seed_named_twice_trains_once(fake_training, data_dir, tmp_path):
    out = tmp_path / "grid"
    assert main(compare_argv(data_dir, out, "--seeds", "0", "0")) == 0 and len(fake_training) == 1
    assert len((out / "runs.jsonl").read_text().splitlines()) == 1


def test_compare_refuses_a_folder_of_other_files(fake_training, data_dir, tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "results.md").write_text("my own notes\n")
    before = contents(out)
    assert "holds files that `compare` did not write" in refused(compare_argv(data_dir, out), capsys)
    assert contents(out) == before and not fake_training


def test_an_out_folder_that_cannot_be_created_is_refused_before_training(fake_training, data_dir, capsys):
    line = refused(
        ["train", "--method", "head", "--data-dir", data_dir, "--out", "/proc/adapterlib-run"], capsys
    )
    assert "--out /proc/adapterlib-run: cannot create anything in /proc" in line and not fake_training
