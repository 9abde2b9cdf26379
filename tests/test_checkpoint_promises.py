"""Checkpoint promises a red team probed: dtype changes, removed fields, edited configs, read-only
folders with an interrupted save, and mistakes in the folder to save into."""

import errno
import json
import os
import warnings

import pytest
import torch

from adapterlib import (
    LoraConfig,
    PeftModel,
    TaskType,
    checkpoint_files,
    get_peft_model,
    load_adapter,
    save_adapter,
)
from adapterlib.checkpoint import (
    COMMIT_RECORD,
    CONFIG_FILE,
    STAGING,
    WEIGHTS_FILE,
    DifferentBaseWarning,
    adapter_files,
    add_checksum,
)
from conftest import perturbed, tiny_classifier

HALF = [torch.bfloat16, torch.float16]


def lora(seed: int = 0, dtype: torch.dtype = torch.float32) -> PeftModel:
    return get_peft_model(tiny_classifier(seed=seed).to(dtype), LoraConfig(task_type=TaskType.SEQ_CLS, r=4))


@pytest.mark.parametrize("saved", HALF, ids=str)
def test_the_same_base_in_the_other_half_dtype_loads_silently(tmp_path, saved):
    other = HALF[1 - HALF.index(saved)]
    save_adapter(lora(dtype=saved), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_adapter(tiny_classifier().to(other), tmp_path)
    with pytest.warns(DifferentBaseWarning):  # another base in the other dtype still warns
        load_adapter(tiny_classifier(seed=1).to(other), tmp_path)


def test_a_removed_format_version_does_not_skip_the_checksum(tmp_path):
    save_adapter(perturbed(lora()), tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    del meta["format_version"], meta["sha256"]
    meta["peft_config"]["alpha"] *= 4
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"no format_version \(format 1\) but records .*add_checksum"):
        load_adapter(tiny_classifier(), tmp_path)
    add_checksum(tmp_path)  # the owner accepts the edit: format 2 with a checksum again
    assert json.loads((tmp_path / CONFIG_FILE).read_text())["format_version"] == 2
    load_adapter(tiny_classifier(), tmp_path)


def test_an_edited_alpha_names_add_checksum(tmp_path):
    save_adapter(lora(), tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    meta["peft_config"]["alpha"] *= 4
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"damaged or was edited.*add_checksum\("):
        load_adapter(tiny_classifier(), tmp_path)


def test_a_config_changed_after_the_adapter_was_made_is_not_saved(tmp_path):
    model = lora()
    model.active_config.r = 2
    with pytest.raises(ValueError, match=r"was changed after adapter 'default' was made \(r: 4 -> 2\)"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    model.active_config.r = 4
    model.save_pretrained(tmp_path / "out")
    load_adapter(tiny_classifier(), tmp_path / "out")


def test_a_read_only_folder_with_a_committed_interrupted_save_reads_the_new_pair(
    tmp_path, monkeypatch, batch
):
    old, new = perturbed(lora(), seed=1), perturbed(lora(), seed=2)
    save_adapter(old, tmp_path)
    files = adapter_files(new)
    (tmp_path / STAGING).mkdir()
    for name, data in files.items():
        (tmp_path / STAGING / name).write_bytes(data)
    (tmp_path / STAGING / COMMIT_RECORD).write_text("{}")
    os.replace(tmp_path / STAGING / WEIGHTS_FILE, tmp_path / WEIGHTS_FILE)  # killed between the renames
    monkeypatch.setattr(checkpoint_files.os, "access", lambda path, mode: False)  # as for a read-only folder
    loaded = load_adapter(tiny_classifier(), tmp_path)
    assert torch.equal(loaded(**batch).logits, new(**batch).logits)
    assert (tmp_path / STAGING).is_dir()  # nothing was written


@pytest.mark.parametrize(
    "folder, error, message",
    [
        (None, TypeError, "named by a str or Path, got None"),
        ("", ValueError, "is '' \\(empty\\); name one"),
        ("a_file", ValueError, "a_file is a file; a checkpoint is a folder"),
    ],
    ids=["none", "empty", "a-file"],
)
def test_a_wrong_folder_to_save_into_is_refused(tmp_path, monkeypatch, folder, error, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("mine\n")
    for save in (lora().save_pretrained, lambda f: save_adapter(lora(), f)):
        with pytest.raises(error, match=message):
            save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize(
    "code, advice", [(errno.EACCES, "Save into a folder you can write to"), (errno.ENOSPC, "No space")]
)
def test_a_failed_save_names_the_folder_and_removes_the_folder_it_created(
    tmp_path, monkeypatch, code, advice
):
    def failing(path, data):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(checkpoint_files, "write_synced", failing)
    with pytest.raises(
        OSError, match=f"could not save the adapter into {tmp_path / 'new' / 'run'}.*{advice}"
    ):
        lora().save_pretrained(tmp_path / "new" / "run")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine").mkdir()
    with pytest.raises(OSError):
        lora().save_pretrained(tmp_path / "mine")
    assert list(tmp_path.iterdir()) == [tmp_path / "mine"]  # a folder the save did not create stays


def test_unmerge_with_nothing_merged_warns():
    model = lora()
    with pytest.warns(UserWarning, match="no adapter is merged"):
        model.unmerge_adapter()
    model.merge_adapter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.unmerge_adapter()
