"""Tasks as data: the four known tasks on the shared copies, folders of any task, and the errors."""

import os
from collections import Counter
from pathlib import Path

import pytest

from adapterlib import data
from adapterlib.tasks import TASKS, folder_task, get_task, load_task, read_task, task_fingerprint


def shared_data_root() -> Path | None:
    """The folder holding sst2/ and senteval/: $ADAPTERLIB_DATA_ROOT, else the parent of the SST-2
    folder the test run was given (--data-dir), when it holds senteval/ too."""
    if os.environ.get("ADAPTERLIB_DATA_ROOT"):
        return Path(os.environ["ADAPTERLIB_DATA_ROOT"])
    sst2 = os.environ.get("ADAPTERLIB_SST2_DIR")
    if sst2 and (Path(sst2).parent / "senteval").is_dir():
        return Path(sst2).parent
    return None


ROOT = shared_data_root()
needs_shared = pytest.mark.skipif(
    ROOT is None, reason="run with --data-dir=../shared/data/sst2 (or set ADAPTERLIB_DATA_ROOT)"
)

# Sizes and class balances from the data folders' READMEs.
README = {
    "sst2": (67_349, 872, 2),
    "trec": (5_452, 500, 6),
    "subj": (9_000, 1_000, 2),
    "cr": (3_389, 376, 2),
}


@needs_shared
@pytest.mark.parametrize("name", list(README))
def test_known_tasks_have_the_readme_sizes(name):
    train, evaluation, classes = README[name]
    splits = read_task(name, ROOT)
    assert (len(splits["train"]), len(splits["evaluation"]), get_task(name).num_classes) == (
        train,
        evaluation,
        classes,
    )
    assert set(splits["train"].labels) == set(range(classes))


@needs_shared
def test_class_balance_of_the_evaluation_files():
    counts = {name: Counter(read_task(name, ROOT)["evaluation"].labels) for name in ("sst2", "trec", "cr")}
    assert [counts["trec"][c] for c in range(6)] == [138, 94, 9, 65, 81, 113]
    assert counts["sst2"][1] == 444
    assert round(counts["cr"][1] / 376, 2) == 0.63


@needs_shared
def test_evaluation_file_is_dev_where_there_is_one_else_test():
    assert [TASKS[n].evaluation_file for n in ("sst2", "trec", "subj", "cr")] == ["dev.tsv"] + [
        "test.tsv"
    ] * 3
    for task in TASKS.values():
        assert folder_task(task.path(ROOT)).evaluation_file == task.evaluation_file


@needs_shared
def test_sst2_fingerprint_is_the_one_data_py_gives():
    assert task_fingerprint("sst2", ROOT) == data.data_fingerprint(ROOT / "sst2")
    assert len({task_fingerprint(name, ROOT) for name in TASKS}) == 4


@needs_shared
def test_load_task_is_shaped_like_load_sst2():
    trec = load_task("trec", ROOT)
    assert trec["train"].column_names == ["sentence", "label", "idx"]
    assert trec["validation"].features["label"].names == ["DESC", "ENTY", "ABBR", "HUM", "LOC", "NUM"]
    assert len(trec["validation"]) == 500


def write(
    folder: Path, train: str, evaluation: str = "sentence\tlabel\nok\t0\n", name: str = "dev.tsv"
) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "train.tsv").write_text(train)
    if evaluation is not None:
        (folder / name).write_text(evaluation)
    return folder


def test_a_folder_is_a_task_with_classes_read_from_its_labels(tmp_path):
    folder = write(tmp_path / "topics", "sentence\tlabel\na\t2\nb\t0\nc\t1\nd\t1\n", name="test.tsv")
    task = get_task(str(folder))
    assert (task.name, task.num_classes, task.evaluation_file) == ("topics", 3, "test.tsv")
    assert read_task(task)["train"].labels == [2, 0, 1, 1]


def test_quotes_and_missing_value_words_stay_strings(tmp_path):
    folder = write(
        tmp_path / "d", "sentence\tlabel\nnull\t0\nnan\t1\n`` it 's \" great '' \t1\nNA\t0\n\"a\t1\n"
    )
    assert read_task(folder_task(folder))["train"].sentences == [
        "null",
        "nan",
        "`` it 's \" great '' ",
        "NA",
        '"a',
    ]


def test_fingerprint_follows_the_content_not_the_place(tmp_path):
    one = write(tmp_path / "one", "sentence\tlabel\na\t0\nb\t1\n")
    two = write(tmp_path / "two", "sentence\tlabel\na\t0\nb\t1\n")
    assert task_fingerprint(str(one)) == task_fingerprint(str(two))
    (two / "dev.tsv").write_text("sentence\tlabel\nok\t1\n")
    assert task_fingerprint(str(one)) != task_fingerprint(str(two))


@pytest.mark.parametrize(
    "train, message",
    [
        ("sentence\tlabel\na\t0\nb\t2\n", r"train.tsv: labels must be the classes 0..2, .* class 1 has none"),
        ("sentence\tlabel\na\t1\nb\t2\n", r"class 0 has none"),
        ("sentence\tlabel\na\t0\nb\t-1\n", r"train.tsv, line 3: label '-1' is not a class number"),
        ("sentence\tlabel\na\t0\nb\t01\n", r"line 3: label '01' is not a class number"),
        ("sentence\tlabel\na\t0\nb\t\n", r"line 3: label '' is not a class number"),
        ("sentence\tlabel\na\t0\nb\tc\t1\n", r"line 3: expected 2 tab-separated fields"),
        ("text\tlabel\na\t0\n", r"line 1: header is 'text\\tlabel'"),
        ("sentence\tlabel\n\n", r"has the header but no rows"),
        ("", r"is empty"),
    ],
)
def test_bad_training_files_name_the_file_and_line(tmp_path, train, message):
    with pytest.raises(ValueError, match=message):
        folder_task(write(tmp_path / "d", train))


def test_known_task_refuses_a_label_beyond_its_classes(tmp_path):
    write(tmp_path / "sst2", "sentence\tlabel\na\t0\nb\t1\n", "sentence\tlabel\nc\t2\n")
    with pytest.raises(ValueError, match=r"dev.tsv, line 2: label 2 is not one of the classes 0..1"):
        read_task("sst2", tmp_path)


def test_evaluation_file_may_lack_a_class(tmp_path):
    folder = write(tmp_path / "d", "sentence\tlabel\na\t0\nb\t1\nc\t2\n", "sentence\tlabel\nx\t2\n")
    assert read_task(folder_task(folder))["evaluation"].labels == [2]


def test_unknown_name_lists_the_tasks_and_how_to_name_a_folder():
    with pytest.raises(ValueError) as error:
        get_task("sts")
    message = str(error.value)
    assert "\n" not in message
    assert "sst2, trec, subj, cr" in message and "folder" in message and "train.tsv" in message


def test_missing_folders_and_files(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"missing does not exist"):
        get_task(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=r"has neither dev.tsv nor test.tsv"):
        folder_task(write(tmp_path / "d", "sentence\tlabel\na\t0\n", evaluation=None))
    (tmp_path / "e").mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no train.tsv"):
        folder_task(tmp_path / "e")
    with pytest.raises(FileNotFoundError, match=r"senteval/trec does not exist"):
        read_task("trec", tmp_path)
    monkeypatch.delenv("ADAPTERLIB_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"pass data_root= \(or set \$ADAPTERLIB_DATA_ROOT\)"):
        read_task("trec")


def test_environment_names_the_data_root(tmp_path, monkeypatch):
    write(tmp_path / "sst2", "sentence\tlabel\na\t0\nb\t1\n")
    monkeypatch.setenv("ADAPTERLIB_DATA_ROOT", str(tmp_path))
    assert len(read_task("sst2")["train"]) == 2
