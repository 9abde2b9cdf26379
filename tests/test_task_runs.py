"""Tasks through the whole package: a head per task, saved and restored with its class names, the
command line's --task (train, predict, count, compare), results stamped with the task, and the
bad input: an unknown task, labels that are not 0..C-1, a checkpoint of another number of classes.

The command-line runs use the tiny BERT of conftest.py and a few dozen hand-made sentences, laid
out as a data root (``sst2/`` and ``senteval/trec``) so that --task trec reads them."""

import json
from pathlib import Path

import pytest
import torch

from adapterlib import LoraConfig, get_peft_model, load_adapter, save_adapter
from adapterlib.checkpoint import CONFIG_FILE
from adapterlib.cli import main
from adapterlib.compare import summarize
from adapterlib.config import TaskType
from adapterlib.multitask import set_head
from adapterlib.runs import Recipe, RunSpec, fingerprints
from adapterlib.tasks import TASKS, at, task_fingerprint
from adapterlib.train import prepare_model
from conftest import assert_unchanged, perturbed, snapshot, tiny_classifier

pytest_plugins = ["pytester"]
TREC_NAMES = TASKS["trec"].label_names
QUESTIONS = ["what is", "who was", "where is", "how many", "why did", "which one"]


def write_task(
    folder: Path, classes: int, train: int = 36, evaluation: int = 12, name: str = "test.tsv"
) -> Path:
    """A task folder whose label is the sentence's first two words (``QUESTIONS[label]``)."""
    folder.mkdir(parents=True, exist_ok=True)

    def rows(count: int, offset: int) -> str:
        lines = [f"{QUESTIONS[i % classes]} thing {i + offset} ?\t{i % classes}" for i in range(count)]
        return "sentence\tlabel\n" + "\n".join(lines) + "\n"

    (folder / "train.tsv").write_text(rows(train, 0))
    (folder / name).write_text(rows(evaluation, 1_000))
    return folder


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A data root with a tiny sst2/ (dev.tsv) and senteval/trec (six classes, test.tsv)."""
    root = tmp_path_factory.mktemp("data-root")
    write_task(root / "sst2", 2, name="dev.tsv")
    write_task(root / "senteval" / "trec", 6)
    return root


def refused(argv: list, capsys) -> str:
    """``main(argv)`` must exit 2 with one stderr line; returns it."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    return lines[0]


def train_args(model: str, *extra) -> list[str]:
    return ["train", "--method", "lora", "--model", model, "--train-size", "0", "--epochs", "1", *extra]


# ------------------------------------------------------------------ heads: sized, saved, restored


def test_a_six_class_checkpoint_loads_onto_a_fresh_two_class_base(tmp_path, batch):
    trained = perturbed(get_peft_model(tiny_classifier(num_labels=6), LoraConfig(task_type=TaskType.SEQ_CLS)))
    trained.base_model.config.id2label = dict(enumerate(TREC_NAMES))
    save_adapter(trained, tmp_path)
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["head"] == {
        "num_labels": 6,
        "label_names": list(TREC_NAMES),
    }
    loaded = load_adapter(tiny_classifier(), tmp_path)  # the base's own head has 2 classes
    assert loaded.label_names == {"default": TREC_NAMES}
    assert torch.equal(loaded(**batch).logits, trained(**batch).logits)
    assert loaded.base_model.classifier.base_layer.out_features == 2


def test_set_head_names_its_classes_and_they_travel_with_the_adapter(tmp_path):
    model = get_peft_model(tiny_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS), "cr")
    model.add_adapter("trec", LoraConfig(task_type=TaskType.SEQ_CLS))
    set_head(model, "trec", 6, TREC_NAMES)
    model.save_pretrained(tmp_path)
    assert load_adapter(tiny_classifier(), tmp_path / "trec", "trec").label_names["trec"] == TREC_NAMES
    assert json.loads((tmp_path / "cr" / CONFIG_FILE).read_text())["head"]["num_labels"] == 2
    with pytest.raises(ValueError, match="label_names must name each of the 3 classes"):
        set_head(model, "trec", 3, ["a", "b"])
    model.delete_adapter("trec")
    assert "trec" not in model.label_names


def test_label_names_that_do_not_fit_the_head_are_refused_and_change_nothing(tmp_path):
    save_adapter(
        perturbed(get_peft_model(tiny_classifier(), LoraConfig(task_type=TaskType.SEQ_CLS))), tmp_path
    )
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["head"]["label_names"] = ["only one"]  # outside the checksum, which covers weights and config
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    base = tiny_classifier()
    before = snapshot(base)
    with pytest.raises(ValueError, match=r"label_names do not name the 2 classes of the saved head"):
        load_adapter(base, tmp_path)
    assert_unchanged(base, before)


def test_the_model_a_run_prepares_has_the_task_s_head_and_names(tiny_model_dir):
    model = prepare_model(Recipe("lora"), tiny_model_dir, TASKS["trec"])
    assert model.base_model.classifier.active.out_features == 6
    assert [model.config.id2label[c] for c in range(6)] == list(TREC_NAMES)


# ------------------------------------------------------------------ runs: resolved once, stamped


def test_a_run_spec_holds_the_task_and_its_folder(tiny_root, monkeypatch):
    monkeypatch.setenv("ADAPTERLIB_DATA_ROOT", str(tiny_root))
    monkeypatch.delenv("ADAPTERLIB_SST2_DIR", raising=False)
    spec = RunSpec.resolve(Recipe("lora", train_size=None), task="trec")
    assert (spec.task, spec.data_dir, spec.train_examples) == (TASKS["trec"], tiny_root / "senteval/trec", 36)
    prints = fingerprints("unused-hub-name", None, "trec")
    assert prints["data_fingerprint"] == task_fingerprint(at(TASKS["trec"], tiny_root / "senteval/trec"))
    assert prints["data_fingerprint"] != fingerprints("unused-hub-name", None, "sst2")["data_fingerprint"]


def test_a_task_too_small_for_the_tuning_slice_is_refused(tmp_path):
    folder = write_task(tmp_path / "small", 2)
    with pytest.raises(ValueError, match=r"the tuning slice is rows 2,000-2,999 .* task small has 36"):
        RunSpec.resolve(Recipe("lora", train_size=None), evaluate_on="tuning", task=str(folder))


def test_a_table_never_mixes_tasks():
    record = {
        "method": "head",
        "recipe": {"method_options": {}, "seed": 0, "learning_rate": 1e-3},
        "accuracy": 0.8,
        "evaluation_examples": 12,
        "trainable_parameters": 10,
        "trainable_fraction": 0.1,
        "seconds_per_step": 0.1,
        "train_seconds": 1.0,
    }
    assert len(summarize([record, record | {"task": "sst2"}])) == 1  # records from before tasks are SST-2's
    with pytest.raises(
        ValueError, match=r"the records come from 2 tasks \(sst2, trec\); a table compares one"
    ):
        summarize([record, record | {"task": "trec"}])


# ------------------------------------------------------------------ the command line


@pytest.mark.slow
def test_train_and_predict_on_trec(tiny_root, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADAPTERLIB_DATA_ROOT", str(tiny_root))
    out = tmp_path / "trec"
    assert main(train_args(tiny_model_dir, "--task", "trec", "--out", str(out))) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("lora on trec: test accuracy")
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["task"], metrics["label_names"], metrics["evaluation_examples"]) == (
        "trec",
        list(TREC_NAMES),
        12,
    )
    assert metrics["data_fingerprint"] == task_fingerprint(at(TASKS["trec"], tiny_root / "senteval/trec"))
    assert json.loads((out / CONFIG_FILE).read_text())["head"]["num_labels"] == 6

    file = tmp_path / "questions.tsv"
    file.write_text("sentence\tlabel\nwho was thing 7 ?\tHUM\nhow many thing 9 ?\t5\n")
    assert main(["predict", "--checkpoint", str(out), "--file", str(file)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert (
        set(lines[:2]) <= set(TREC_NAMES) and lines[2].startswith("accuracy: ") and lines[2].endswith("/2)")
    )

    files = {p.name: p.read_bytes() for p in out.iterdir()}
    line = refused(["predict", "--checkpoint", out, "--task", "sst2", "a question"], capsys)
    assert line == (
        f"adapterlib predict: error: --checkpoint {out} has a head of 6 classes (task trec: "
        f"{', '.join(TREC_NAMES)}), but --task sst2 has 2; name a task of 6 classes, or leave --task out "
        "to use the checkpoint's own."
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


@pytest.mark.slow
def test_a_folder_task_and_an_sst2_checkpoint_read_with_another_task_s_names(
    tiny_model_dir, tmp_path, capsys
):
    folder = write_task(tmp_path / "reviews", 2, name="dev.tsv")
    out = tmp_path / "run"
    assert main(train_args(tiny_model_dir, "--task", str(folder), "--out", str(out))) == 0
    assert json.loads((out / "metrics.json").read_text())["label_names"] == ["0", "1"]
    assert main(["predict", "--checkpoint", str(out), "--task", "cr", "what is it ?"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] in ("negative", "positive")
    assert refused(
        [
            "train",
            "--task",
            str(folder),
            "--data-dir",
            str(tmp_path),
            "--method",
            "lora",
            "--out",
            tmp_path / "x",
        ],
        capsys,
    ).endswith("so there is no other folder to read: leave --data-dir (data_dir=) out.")


@pytest.mark.slow
def test_compare_keeps_one_task_to_a_folder(tiny_root, tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADAPTERLIB_DATA_ROOT", str(tiny_root))
    monkeypatch.delenv("ADAPTERLIB_SST2_DIR", raising=False)
    out = tmp_path / "grid"
    grid = ["compare", "--methods", "head", "--seeds", "0", "--train-size", "0", "--epochs", "1"]
    assert main([*grid, "--model", tiny_model_dir, "--task", "trec", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert [run["task"] for run in saved["runs"]] == ["trec"] and "Task: trec" in (
        out / "results.md"
    ).read_text()
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "(--task trec there, sst2 here" in refused(
        [*grid, "--model", tiny_model_dir, "--out", out], capsys
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_count_sizes_the_head_by_the_task(tiny_model_dir, capsys):
    counts = {}
    for task in ("sst2", "trec"):
        assert main(["count", "--method", "lora", "--model", tiny_model_dir, "--task", task]) == 0
        trainable = capsys.readouterr().out.split("|")[0]
        counts[task] = int(trainable.removeprefix("trainable ").replace(",", ""))
    assert counts["trec"] - counts["sst2"] == 4 * (32 + 1)  # four more outputs of a 32-wide head


def test_an_unknown_task_lists_the_tasks_and_how_to_name_a_folder(tmp_path, capsys):
    for command in (["train", "--method", "lora", "--out", tmp_path / "run"], ["count", "--method", "lora"]):
        line = refused([*command, "--task", "sts"], capsys)
        assert (
            "--task sts: task 'sts' is not known; use one of: sst2, trec, subj, cr, or name a folder" in line
        )
    assert not (tmp_path / "run").exists()


def test_labels_that_are_not_0_to_c_minus_1_are_refused(tmp_path, tiny_model_dir, capsys):
    folder = write_task(tmp_path / "gappy", 3)
    (folder / "train.tsv").write_text("sentence\tlabel\na\t0\nb\t2\n")
    line = refused(train_args(tiny_model_dir, "--task", folder, "--out", tmp_path / "run"), capsys)
    assert line.endswith(
        "train.tsv: labels must be the classes 0..2, each with examples; class 1 has none "
        "(renumber the labels from 0 without gaps)."
    )
    assert not (tmp_path / "run").exists()


def test_a_known_task_without_data_says_where_to_point(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ADAPTERLIB_DATA_ROOT", raising=False)
    line = refused(["train", "--method", "lora", "--task", "cr", "--out", tmp_path / "run"], capsys)
    assert line.endswith(
        "no data for task cr: pass --data-dir PATH (data_dir=), the task's own folder (e.g. "
        "../shared/data/senteval/cr), or set $ADAPTERLIB_DATA_ROOT to the folder that holds senteval/cr."
    )


# ------------------------------------------------------------------ the shared data, under CI


@pytest.mark.task_data
def test_the_shared_tasks_resolve_under_the_data_root(data_root):
    for name in ("trec", "subj", "cr"):
        spec = RunSpec.resolve(Recipe("lora"), task=name)
        assert spec.data_dir == data_root / "senteval" / name and spec.task.evaluation_file == "test.tsv"


MARKED = """
import pytest

@pytest.mark.task_data
def test_reads_the_tasks():
    pass
"""


@pytest.mark.parametrize("ci, outcome", [("true", {"errors": 1}), ("false", {"skipped": 1})])
def test_a_task_data_test_skips_without_data_but_not_in_ci(pytester, monkeypatch, ci, outcome):
    pytester.makeconftest((Path(__file__).resolve().parents[1] / "conftest.py").read_text())
    pytester.makepyfile(test_marked=MARKED)
    monkeypatch.delenv("ADAPTERLIB_DATA_ROOT", raising=False)
    monkeypatch.delenv("ADAPTERLIB_SST2_DIR", raising=False)
    monkeypatch.setenv("CI", ci)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(**outcome)
    if ci == "true":
        result.stdout.fnmatch_lines(["*a test of the tasks' data may not be skipped in CI: *no task data*"])
