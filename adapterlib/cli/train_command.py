"""The ``train`` and ``count`` commands, and how a trained run is saved and fingerprinted.

``train`` makes every check of :mod:`.checks` first, and imports the training modules (the
``Trainer``, ``datasets``) only after them. ``count`` makes the same checks, then counts the
parameters in closed form without training or loading weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from ..checkpoint import save_adapter
from ..counting import bert_parameter_count, head_parameter_count, method_parameter_count
from ..data import data_fingerprint, fingerprint
from ..modeling import (
    is_main_process,
    model_location,
    peft_config_for,
    process_count,
    resolve_model_name,
    resolve_precision,
)
from ..peft_model import PeftModel
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
    weight_files,
)

TRAINED_TENSORS = "model.safetensors"


def model_fingerprint(name: str) -> str:
    """Which model a run starts from: the fingerprint of ``config.json`` and the weight files for
    the packaged model or a folder, of the name for a hub model."""
    location = Path(model_location(name))
    if not location.is_dir():
        return fingerprint(name)
    return fingerprint(location / "config.json", *weight_files(location))


def fingerprints(model_name: str, data_dir: str | None) -> dict[str, str]:
    return {
        "data_fingerprint": data_fingerprint(data_dir),
        "model_fingerprint": model_fingerprint(model_name),
    }


def save_trained(model, out: Path, record: dict) -> None:
    """The adapter checkpoint (PEFT methods) or the trained tensors (full, head), then metrics.json.

    Everything is written into a hidden folder beside ``out`` that is then renamed to ``out``, so
    ``out`` appears complete or not at all.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if isinstance(model, PeftModel):
            save_adapter(model, staging, base_model_name=record["model"])
        else:
            trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
            save_file(trained, staging / TRAINED_TENSORS)
        (staging / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()  # checked empty before training
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging)
        raise


def command_train(args: argparse.Namespace) -> None:
    check_method_flags(args)
    options = method_options(args)
    method_config(args.method, options)
    resolve_precision(args.precision)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a new folder for the checkpoint.")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not an empty folder; choose a new directory.")
    check_out_location(out, out)
    if args.batch_size % process_count():
        raise UsageError(
            f"--batch-size: batch size {args.batch_size} does not split evenly over {process_count()} "
            f"processes; choose a multiple of {process_count()}."
        )
    check_sources(args.model, args.data_dir)
    check_data(args.data_dir, args.train_size)
    model_name = resolve_model_name(args.model)
    check_method(model_name, model_config(model_name), args.method, options, args.pooling)
    check_tokenizer(model_name)
    from ..compare import counted
    from ..train import Recipe, changes_from_seed_recipe, train_and_evaluate

    recipe = Recipe(
        method=args.method,
        learning_rate=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_size=args.train_size or None,
        seed=args.seed,
        pooling=args.pooling,
        method_options=method_options(args),
        precision=args.precision,
        base_quantization=args.base_quantization,
    )
    model, record = train_and_evaluate(
        recipe, args.model, args.data_dir, progress=True, evaluate_each_epoch=args.evaluate_each_epoch
    )
    if not is_main_process():
        return
    record["changes_from_seed_recipe"] = changes_from_seed_recipe(recipe)
    record |= fingerprints(model_name, args.data_dir)
    save_trained(model, out, record)
    print(
        f"{record['method']}: validation accuracy {100 * record['accuracy']:.2f}% after "
        f"{counted(recipe.epochs, 'epoch')} | "
        f"trainable {record['trainable_parameters']:,} of {record['total_parameters']:,} "
        f"({100 * record['trainable_fraction']:.2f}%) | {record['train_seconds']:.0f} s in "
        f"{record['precision']} | saved to {out}"
    )


def command_count(args: argparse.Namespace) -> None:
    """The counts in closed form, after the same checks as ``train``: the method is applied to
    the model's skeleton on the ``meta`` device first, so what ``train`` refuses is refused here."""
    check_method_flags(args)
    check_sources(args.model, None, uses_data=False)
    model_name = resolve_model_name(args.model)
    config = model_config(model_name)
    check_method(model_name, config, args.method, method_options(args), args.pooling)
    with_pooler = args.pooling == "cls"
    base = bert_parameter_count(config, num_labels=2, pooler=with_pooler)
    if args.method == "full":
        trainable, total = base, base
    elif args.method == "head":
        trainable, total = head_parameter_count(config, 2, with_pooler=with_pooler), base
    else:
        peft_config = peft_config_for(args.method, method_options(args))
        inserted = method_parameter_count(config, peft_config)
        head = head_parameter_count(config, 2)
        trainable, total = inserted + head, base + inserted + head
    print(f"trainable {trainable:,} | total {total:,} | fraction {100 * trainable / total:.4f}%")
