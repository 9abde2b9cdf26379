"""A checkpoint's two files are replaced as one unit: an interrupt at any step of a save leaves
the old checkpoint or the new one, a reader never sees one file of each, and the rest of the
folder is left alone."""

import json
import multiprocessing
import os
import time

import pytest
import torch

from adapterlib import LoraConfig, TaskType, checkpoint_files, get_peft_model, load_adapter, save_adapter
from adapterlib.checkpoint import CONFIG_FILE, STAGING, WEIGHTS_FILE, read_checkpoint
from conftest import perturbed, tiny_classifier


def trained(seed: int):
    return perturbed(
        get_peft_model(tiny_classifier(), LoraConfig(r=2, task_type=TaskType.SEQ_CLS)), seed=seed
    )


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def folder_bytes(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_save_replaces_the_pair_and_leaves_the_rest_of_the_folder(tmp_path, batch):
    old, new = trained(seed=1), trained(seed=2)
    old.save_pretrained(tmp_path)
    old.add_adapter("other", LoraConfig(task_type=TaskType.SEQ_CLS))
    save_adapter(old, tmp_path / "other", adapter_name="other")
    (tmp_path / "metrics.json").write_text('{"accuracy": 0.5}\n')
    others = {k: v for k, v in folder_bytes(tmp_path).items() if k not in (CONFIG_FILE, WEIGHTS_FILE)}
    new.save_pretrained(tmp_path)
    after = folder_bytes(tmp_path)
    assert {k: v for k, v in after.items() if k not in (CONFIG_FILE, WEIGHTS_FILE)} == others
    assert sorted(after) == sorted([CONFIG_FILE, WEIGHTS_FILE, *others])  # no staging or lock file left
    assert torch.equal(logits(load_adapter(tiny_classifier(), tmp_path), batch), logits(new, batch))


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_files_and_folders_get_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        save_adapter(trained(seed=1), tmp_path / "new" / "checkpoint")
    finally:
        os.umask(previous)
    for path in (tmp_path / "new", tmp_path / "new" / "checkpoint"):
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        assert (tmp_path / "new" / "checkpoint" / name).stat().st_mode & 0o777 == 0o666 & ~umask


STEPS = ("write_synced", "sync_directory", "replace", "rmtree")


class Interrupted(BaseException):
    """Stands for Ctrl-C or a killed process at one step of a save."""


def interrupt_at(monkeypatch, step: int) -> list[str]:
    """Make the ``step``-th file-system step of the next save raise; return the steps taken."""
    taken: list[str] = []
    originals = {
        "write_synced": checkpoint_files.write_synced,
        "sync_directory": checkpoint_files.sync_directory,
        "replace": os.replace,
        "rmtree": checkpoint_files.shutil.rmtree,
    }

    def counting(name):
        def step_function(*args, **kwargs):
            taken.append(name)
            if len(taken) == step:
                raise Interrupted(f"step {step}: {name}")
            return originals[name](*args, **kwargs)

        return step_function

    monkeypatch.setattr(checkpoint_files, "write_synced", counting("write_synced"))
    monkeypatch.setattr(checkpoint_files, "sync_directory", counting("sync_directory"))
    monkeypatch.setattr(checkpoint_files.os, "replace", counting("replace"))
    monkeypatch.setattr(checkpoint_files.shutil, "rmtree", counting("rmtree"))
    return taken


def steps_of_a_save(tmp_path, monkeypatch) -> int:
    taken = interrupt_at(monkeypatch, step=0)
    save_adapter(trained(seed=1), tmp_path / "count")
    monkeypatch.undo()
    return len(taken)


@pytest.mark.parametrize("killed", [False, True], ids=["exception", "killed"])
def test_an_interrupt_at_any_step_leaves_the_old_or_the_new_checkpoint(tmp_path, monkeypatch, batch, killed):
    """``killed``: the save's own clean-up does not run either, as when the process is killed;
    the next load finds the staging folder and finishes or discards the save."""
    old, new = trained(seed=1), trained(seed=2)
    expected = {"old": logits(old, batch), "new": logits(new, batch)}
    outcomes = []
    for step in range(1, steps_of_a_save(tmp_path, monkeypatch) + 1):
        folder = tmp_path / f"step{step}"
        save_adapter(old, folder)
        (folder / "metrics.json").write_text("{}\n")
        interrupt_at(monkeypatch, step)
        if killed:
            monkeypatch.setattr(checkpoint_files, "finish_interrupted_save", lambda directory: None)
        with pytest.raises(Interrupted):
            save_adapter(new, folder)
        monkeypatch.undo()
        assert (folder / STAGING).exists() == killed
        reloaded = logits(load_adapter(tiny_classifier(), folder), batch)
        outcome = next(name for name, value in expected.items() if torch.equal(reloaded, value))
        outcomes.append(outcome)
        assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE, "metrics.json"]
        save_adapter(old, folder)  # and the folder takes the next save
    # before the commit record the save is discarded, from it on it is finished
    assert outcomes == sorted(outcomes, key=["old", "new"].index)
    assert "old" in outcomes and "new" in outcomes


def test_a_format_2_config_without_its_checksum_is_refused(tmp_path, batch):
    peft_model = trained(seed=1)
    save_adapter(peft_model, tmp_path)
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    del meta["sha256"]
    meta["peft_config"]["alpha"] = 4 * meta["peft_config"]["alpha"]
    (tmp_path / CONFIG_FILE).write_text(json.dumps(meta))
    before = folder_bytes(tmp_path)
    base = tiny_classifier()
    with pytest.raises(ValueError, match=r"has no sha256.*Save the adapter again.*add_checksum"):
        load_adapter(base, tmp_path)
    assert folder_bytes(tmp_path) == before
    assert torch.equal(logits(base, batch), logits(tiny_classifier(), batch))
    checkpoint_files.add_checksum(tmp_path)  # the way out offered for files one trusts
    assert load_adapter(tiny_classifier(), tmp_path).active_config.alpha == meta["peft_config"]["alpha"]


@pytest.mark.parametrize("remove", ["merge_and_unload", "delete_adapter"])
def test_saving_with_no_adapter_left_is_a_clear_error(tmp_path, remove):
    peft_model = trained(seed=1)
    if remove == "merge_and_unload":
        peft_model.merge_and_unload()
    else:
        peft_model.delete_adapter("default")
    for save in (peft_model.save_pretrained, lambda folder: save_adapter(peft_model, folder)):
        with pytest.raises(ValueError, match="no adapter left"):
            save(tmp_path / "out")
        assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="no adapter is active.*add or load one"):
        _ = peft_model.active_config


# ------------------------------------------------------------------ writers and a reader at once


def write_loop(folder, files, rounds: int) -> None:
    for _ in range(rounds):
        checkpoint_files.write_files(folder, files)


def read_loop(folder, tags: dict[float, str], seconds: float, counts) -> None:
    """Read until the writers are done (or ``seconds`` pass); count reads, mixed pairs, errors."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not counts["stop"]:
        try:
            meta, tensors = read_checkpoint(folder)
        except Exception:  # noqa: BLE001 - every error is a failed read here
            counts["errors"] += 1
            continue
        counts["reads"] += 1
        value = float(next(iter(tensors.values())).flatten()[0])
        counts["mixed"] += tags[value] != meta["base_model_name"]


def test_concurrent_writers_never_show_a_reader_a_mixed_pair(tmp_path):
    """Two processes save different adapters into one folder while a third reads it."""
    pairs = {}
    for tag, value in (("one", 1.0), ("two", 2.0)):
        peft_model = trained(seed=1)
        with torch.no_grad():
            for p in peft_model.parameters():
                if p.requires_grad:
                    p.fill_(value)
        pairs[tag] = checkpoint_files.adapter_files(peft_model, base_model_name=tag)
    checkpoint_files.write_files(tmp_path, pairs["one"])
    context = multiprocessing.get_context("fork")
    counts = context.Manager().dict(reads=0, mixed=0, errors=0, stop=False)
    reader = context.Process(target=read_loop, args=(tmp_path, {1.0: "one", 2.0: "two"}, 60.0, counts))
    writers = [context.Process(target=write_loop, args=(tmp_path, pairs[tag], 60)) for tag in pairs]
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    counts["stop"] = True
    reader.join(timeout=60)
    assert [w.exitcode for w in writers] == [0, 0] and reader.exitcode == 0
    assert counts["reads"] > 50
    assert (counts["mixed"], counts["errors"]) == (0, 0)
    print(f"{counts['reads']} reads, {counts['mixed']} mixed, {counts['errors']} errors")
