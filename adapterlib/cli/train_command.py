"""The ``train`` and ``count`` commands, and how a finished run is saved.

``train`` resolves and checks everything it was given once, into one :class:`RunSpec`
(:func:`resolve_run`): the method's options, the output folder, the data, the model (its skeleton
built on the ``meta`` device with the method applied), the number of steps, and the memory the run
will need at its peak against the memory this process may use. Then it claims ``--out`` (a second
``train`` into the same folder is refused from then on), imports the training modules (the
``Trainer``, ``datasets``), trains, and saves. Under ``torchrun`` only the main process (rank 0)
checks ``--out``, claims it and writes to it; the others train beside it. ``count`` makes the
same checks on the model and counts the parameters in closed form, building nothing real.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from ..checkpoint import save_adapter
from ..counting import bert_parameter_count, head_parameter_count, method_parameter_count, peak_memory
from ..methods import get_baseline, get_method
from ..modeling import is_main_process, memory_limit, process_count, resolve_model_name, training_device
from ..peft_model import PeftModel
from ..runs import Recipe, RunSpec, fingerprints
from .checks import (
    UsageError,
    check_data,
    check_method,
    check_method_flags,
    check_out_location,
    check_sources,
    check_tokenizer,
    method_config,
    method_options,
    model_config,
)

TRAINED_TENSORS = "model.safetensors"
CLAIM = ".adapterlib-train"  # in --out while a train run works for it: that run's process id
MAX_LENGTH = 128  # tokens per sentence at most (adapterlib.train.MAX_LENGTH, without importing the Trainer)
GIB = 1024**3


class RunKept(Exception):
    """A finished run could not be moved to ``--out``; the message says where it is."""


def closed_form_counts(config, method: str, options: dict, pooling: str, skeleton) -> tuple[int, int]:
    """``(trainable, total)`` parameters of the classifier a ``train`` run builds: in closed form
    for a PEFT method, from the ``meta`` skeleton's shapes for a baseline (what it trains)."""
    with_pooler = pooling == "cls"
    baseline = get_baseline(method)
    if baseline is not None:
        shapes = dict(skeleton.named_parameters())
        return sum(p.numel() for n, p in shapes.items() if baseline.trains(n)), sum(
            p.numel() for p in shapes.values()
        )
    base = bert_parameter_count(config, num_labels=2, pooler=with_pooler)
    inserted = method_parameter_count(config, method_config(method, options)) + head_parameter_count(
        config, 2
    )
    return inserted, base + inserted


def check_memory(spec: RunSpec, config, skeleton) -> int:
    """Refuse a run whose closed-form peak memory (:func:`adapterlib.counting.peak_memory`) is
    more than this process may use, before anything is allocated; the parameters it trains."""
    recipe = spec.recipe
    trainable, total = closed_form_counts(
        config, recipe.method, recipe.method_options, recipe.pooling, skeleton
    )
    added_keys = 0 if spec.peft_config is None else get_method(recipe.method).added_keys(spec.peft_config)
    needed = peak_memory(
        config, total, trainable, recipe.batch_size // process_count(), MAX_LENGTH, added_keys
    )
    limit = memory_limit()
    if limit is not None and needed > limit:
        raise UsageError(
            f"--method {recipe.method} with these sizes needs about {needed / GIB:,.1f} GiB at its peak "
            f"({total:,} parameters, {trainable:,} trained, batch {recipe.batch_size}, up to {MAX_LENGTH} "
            f"tokens{f' and {added_keys:,} added keys' if added_keys else ''}), more than the "
            f"{limit / GIB:,.1f} GiB this process may use; choose smaller sizes or a smaller --batch-size."
        )
    return trainable


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that is a file or a folder holding anything, or where nothing can be made."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a new folder for the checkpoint.")
    if out.is_dir() and any(out.iterdir()):
        claimed = out / CLAIM
        if claimed.exists():
            process = claimed.read_text().strip()
            if not process_runs(process):
                raise UsageError(
                    f"--out {out} holds only what an `adapterlib train` (process {process}) left when it "
                    f"stopped before finishing; remove {out} and train again."
                )
            raise UsageError(
                f"--out {out} is being written by another `adapterlib train` (process {process}); "
                f"choose another folder, or wait for it to finish."
            )
        raise UsageError(f"--out {out} exists and is not an empty folder; choose a new directory.")
    check_out_location(out, out)


def process_runs(process: str) -> bool:
    """Whether the process with this id (as a claim file holds it) still runs on this machine."""
    try:
        os.kill(int(process), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # runs, under another user
        return True
    return True


def resolve_run(args: argparse.Namespace) -> RunSpec:
    """Every check ``train`` makes, in order, each input resolved once; the run they describe.
    Nothing is allocated and nothing is written."""
    check_method_flags(args)
    options = method_options(args)
    method_config(args.method, options)
    try:
        recipe = Recipe(
            method=args.method,
            learning_rate=args.lr,
            epochs=args.epochs,
            batch_size=args.batch_size,
            train_size=args.train_size or None,
            seed=args.seed,
            pooling=args.pooling,
            method_options=options,
            precision=args.precision,
            base_quantization=args.base_quantization,
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    if is_main_process():  # the process that claims --out; under torchrun the others write nothing
        check_out(Path(args.out))  # there, and would find its claim in it if they looked after it wrote it
    if args.batch_size % process_count():
        raise UsageError(
            f"--batch-size: batch size {args.batch_size} does not split evenly over {process_count()} "
            f"processes; choose a multiple of {process_count()}."
        )
    check_sources(args.model, args.data_dir)
    rows = check_data(args.data_dir, args.train_size)
    try:
        spec = RunSpec.resolve(
            recipe, args.model, args.data_dir, device=training_device(), train_rows=rows["train"]
        )
    except ValueError as error:
        raise UsageError(f"--epochs: {error}" if "epoch" in str(error) else str(error)) from None
    config = model_config(spec.model_name)
    skeleton = check_method(spec.model_name, config, args.method, options, args.pooling)
    trainable = check_memory(spec, config, skeleton)
    check_free_space(Path(args.out), trainable)
    check_tokenizer(spec.model_name)
    return spec


def claim(out: Path) -> bool:
    """Make ``out`` (if needed) and write the claim file of this process into it, so a second
    ``train`` for it is refused while this one runs; True if ``out`` was made here. The claim file
    gets the permissions the umask gives a new file."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    claim_file = out / CLAIM
    try:
        handle = os.open(claim_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # less the umask
    except FileExistsError:
        raise UsageError(
            f"--out {out} is being written by another `adapterlib train`; choose another folder."
        ) from None
    except OSError as error:
        raise UsageError(
            f"--out {out}: cannot write into it ({error.strerror}); choose another folder."
        ) from None
    with os.fdopen(handle, "w") as file:
        file.write(f"{os.getpid()}\n")
    return made


def release(out: Path, made: bool) -> None:
    """Remove this process's claim, and ``out`` itself if it was made for this run and is empty."""
    (out / CLAIM).unlink(missing_ok=True)
    if made and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def check_free_space(out: Path, trainable: int) -> None:
    """Refuse before training when the disk ``out`` would be on cannot hold the trained tensors."""
    needed = 4 * trainable + (1 << 20)  # float32 tensors and a megabyte for the configs and metrics
    existing = next(folder for folder in (out.absolute(), *out.absolute().parents) if folder.exists())
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise UsageError(
            f"--out {out}: the disk has {free / 2**20:,.1f} MiB free, the checkpoint needs about "
            f"{needed / 2**20:,.1f} MiB; free some space or choose another folder."
        )


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_run(model, folder: Path, record: dict) -> None:
    """The adapter checkpoint (PEFT methods) or the trained tensors (baselines), then metrics.json."""
    if isinstance(model, PeftModel):
        save_adapter(model, folder, base_model_name=record["model"])
    else:
        trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, folder / TRAINED_TENSORS)
    (folder / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def save_trained(model, out: Path, record: dict) -> None:
    """Save a finished run to ``out``, so that ``out`` appears complete or not at all.

    Everything is written into a hidden folder beside ``out``, given the permissions the user's
    umask gives a new folder, then renamed to ``out`` (empty, or holding only this run's claim).
    A finished run is never lost: if it cannot be written beside ``out`` it is written to the
    temporary folder, and if the rename fails it stays where it was written; :class:`RunKept`
    then names that folder.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        write_run(model, staging, record)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f"adapterlib-{out.name}-"))
        try:
            write_run(model, staging, record)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        staging.chmod(0o777 & ~current_umask())
        raise RunKept(
            f"the run finished but could not be written beside --out {out} ({error.strerror}); "
            f"it is kept in {staging}: move it to where you want it."
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staging.chmod(0o777 & ~current_umask())
    try:
        (out / CLAIM).unlink(missing_ok=True)
        if out.exists():
            out.rmdir()  # checked empty before training
        staging.rename(out)
    except OSError as error:
        raise RunKept(
            f"the run finished but could not be moved to --out {out} ({error.strerror}); "
            f"it is kept in {staging}: move it there yourself."
        ) from None


def command_train(args: argparse.Namespace) -> None:
    spec = resolve_run(args)
    out = Path(args.out)
    claims = is_main_process()  # the main process claims, saves and releases --out
    made = claim(out) if claims else False
    try:
        from ..compare import counted
        from ..train import changes_from_seed_recipe, train_run

        model, record = train_run(spec, progress=True, evaluate_each_epoch=args.evaluate_each_epoch)
        if not claims:
            return
        record["changes_from_seed_recipe"] = changes_from_seed_recipe(spec.recipe)
        record |= fingerprints(spec.model_name, spec.data_dir)
        save_trained(model, out, record)
    finally:  # on every way out, a kept run's and an interrupted one's included
        if claims:
            release(out, made)
    print(
        f"{record['method']}: validation accuracy {100 * record['accuracy']:.2f}% after "
        f"{counted(record['epochs_trained'], 'epoch')}{rounded_up(record, spec.recipe.epochs)} | "
        f"trainable {record['trainable_parameters']:,} of {record['total_parameters']:,} "
        f"({100 * record['trainable_fraction']:.2f}%) | {record['train_seconds']:.0f} s in "
        f"{record['precision']} | saved to {out}"
    )


def rounded_up(record: dict, asked: float) -> str:
    """A note for a run whose epochs ended inside a step and so trained more than asked."""
    if abs(record["epochs_trained"] - asked) < 1e-9:
        return ""
    return (
        f" ({record['steps']} steps: --epochs {asked:g} ends inside a step, and training ends at a whole one)"
    )


def command_count(args: argparse.Namespace) -> None:
    """The counts in closed form, after the same checks as ``train``: the method is applied to
    the model's skeleton on the ``meta`` device first, so what ``train`` refuses is refused here,
    and nothing real is built whatever the sizes."""
    check_method_flags(args)
    check_sources(args.model, None, uses_data=False)
    model_name = resolve_model_name(args.model)
    config = model_config(model_name)
    options = method_options(args)
    skeleton = check_method(model_name, config, args.method, options, args.pooling)
    trainable, total = closed_form_counts(config, args.method, options, args.pooling, skeleton)
    print(f"trainable {trainable:,} | total {total:,} | fraction {100 * trainable / total:.4f}%")
