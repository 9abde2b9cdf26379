"""``python -m adapterlib`` / ``adapterlib``: train, predict and count from the command line.

    adapterlib train --method lora --r 8 --out runs/lora
    adapterlib predict --checkpoint runs/lora "a gripping, funny film" "a dull mess"
    adapterlib count --method adapter --r 16
    torchrun --nproc_per_node 2 -m adapterlib -- train --method lora --r 8 --out runs/lora

The last line trains one model in two processes (``--`` keeps torchrun from reading ``--r`` as
an abbreviation of one of its own options).

Arguments are checked before anything slow happens: the training modules (the ``Trainer``,
``datasets``) are imported only once the options, the output folder and the data and model
sources have been checked, so a mistake is reported in one line within seconds.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from .checkpoint import load_adapter, save_adapter
from .counting import bert_parameter_count, head_parameter_count, method_parameter_count
from .data import DATA_DIR_VARIABLE, LABEL_NAMES, hub_reachable, hub_switched_off, resolve_data_dir
from .modeling import (
    DEFAULT_POOLING,
    METHODS,
    POOLINGS,
    PRECISIONS,
    is_main_process,
    load_classifier,
    load_tokenizer,
    model_location,
    needs_hub,
    peft_config_for,
    resolve_model_name,
    resolve_precision,
)
from .peft_model import PeftModel

TRAINED_TENSORS = "model.safetensors"
INTERRUPTED = {"train": "nothing was saved", "compare": "finished runs are kept in runs.jsonl; the same command resumes"}


class UsageError(Exception):
    """Bad arguments: reported in one line, exit code 2."""


def method_options(args: argparse.Namespace) -> dict:
    """The PEFT config fields named on the command line for ``args.method``."""
    options = {}
    if args.method in ("adapter", "lora") and args.r is not None:
        options["r"] = args.r
    if args.method == "adapter" and args.placement:
        options["placement"] = args.placement
    if args.method == "lora" and args.target_modules:
        options["target_modules"] = tuple(args.target_modules)
    if args.method == "prefix" and args.num_virtual_tokens is not None:
        options["num_virtual_tokens"] = args.num_virtual_tokens
    return options


def check_sources(model: str | None, data_dir: str | None) -> None:
    """Refuse at once what would need the Hugging Face hub when the hub does not answer: no data
    folder (SST-2 would come from the hub), or a ``--model`` that is neither packaged nor a folder.

    With ``$HF_HUB_OFFLINE`` set a hub model name is let through: transformers looks for it in
    its local cache and says at once when it is not there.
    """
    data_from_hub = resolve_data_dir(data_dir) is None
    model_name = resolve_model_name(model)
    model_from_hub = needs_hub(model_name) and not hub_switched_off()
    if not (data_from_hub or model_from_hub) or hub_reachable():
        return
    hub = "is switched off ($HF_HUB_OFFLINE / $HF_DATASETS_OFFLINE)" if hub_switched_off() else "does not answer"
    if data_from_hub:
        raise UsageError(f"no SST-2 data: pass --data-dir PATH (a GLUE-format folder with train.tsv and dev.tsv) "
                         f"or set ${DATA_DIR_VARIABLE}; the Hugging Face hub {hub}.")
    raise UsageError(f"--model {model_name} is not a local folder and the Hugging Face hub {hub}; pass --model PATH "
                     f"to a model folder, or leave --model out for the packaged MiniLM-L6.")


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
    peft_config_for(args.method, method_options(args))  # bad method options fail here, before anything loads
    resolve_precision(args.precision)
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty folder; choose a new directory.")
    check_sources(args.model, args.data_dir)
    from .compare import counted
    from .train import Recipe, changes_from_seed_recipe, train_and_evaluate

    recipe = Recipe(method=args.method, learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                    train_size=args.train_size or None, seed=args.seed, pooling=args.pooling,
                    method_options=method_options(args), precision=args.precision)
    model, record = train_and_evaluate(recipe, args.model, args.data_dir, progress=True,
                                       evaluate_each_epoch=args.evaluate_each_epoch)
    if not is_main_process():
        return
    record["changes_from_seed_recipe"] = changes_from_seed_recipe(recipe)
    save_trained(model, out, record)
    print(
        f"{record['method']}: validation accuracy {100 * record['accuracy']:.2f}% after {counted(recipe.epochs, 'epoch')} | "
        f"trainable {record['trainable_parameters']:,} of {record['total_parameters']:,} "
        f"({100 * record['trainable_fraction']:.2f}%) | {record['train_seconds']:.0f} s in {record['precision']} | saved to {out}"
    )


def load_checkpoint(directory: Path):
    """Rebuild the trained model from a ``train`` output directory."""
    metrics_file = directory / "metrics.json"
    if not metrics_file.is_file():
        raise UsageError(f"{directory} is not a checkpoint written by `adapterlib train` (no metrics.json).")
    record = json.loads(metrics_file.read_text())
    base = load_classifier(record["model"], pooling=record["recipe"]["pooling"])
    if record["method"] in ("full", "head"):
        trained = load_file(directory / TRAINED_TENSORS)
        missing = set(trained) - set(dict(base.named_parameters()))
        if missing:
            raise UsageError(f"{directory / TRAINED_TENSORS} holds tensors the base model lacks: {sorted(missing)[:3]}")
        base.load_state_dict(trained, strict=False)
        model = base
    else:
        model = load_adapter(base, directory)
    return model.eval(), load_tokenizer(record["model"])


def read_inputs(args: argparse.Namespace) -> tuple[list[str], list[int] | None]:
    """Sentences from the command line or a file (one a line, or a TSV with a sentence column)."""
    if not args.file:
        if not args.text:
            raise UsageError("give sentences to classify, or --file F.")
        return list(args.text), None
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"--file {path} does not exist.")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t") if lines else []
    column = next((c for c in ("sentence", "content") if c in header), None)
    if column is None:
        return [line for line in lines if line.strip()], None
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    labels = [int(row["label"]) for row in rows] if "label" in header else None
    return [row[column] for row in rows], labels


def command_predict(args: argparse.Namespace) -> None:
    import torch

    texts, labels = read_inputs(args)
    model, tokenizer = load_checkpoint(Path(args.checkpoint))
    predictions = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(texts[start : start + 64], padding=True, truncation=True, max_length=128, return_tensors="pt")
            predictions += model(**batch).logits.argmax(-1).tolist()
    for prediction in predictions:
        print(LABEL_NAMES[prediction])
    if labels is not None:
        correct = sum(p == y for p, y in zip(predictions, labels))
        print(f"accuracy: {100 * correct / len(labels):.2f}% ({correct}/{len(labels)})")


def command_count(args: argparse.Namespace) -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_location(resolve_model_name(args.model)))
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


GRID_SIZES = {"head": [{}], "full": [{}], "adapter": [{"r": r} for r in (16, 64, 4)],
              "lora": [{"r": r} for r in (8, 32, 2)], "prefix": [{"num_virtual_tokens": n} for n in (20, 5, 10)]}


def ran_in(record: dict) -> str:
    """The precision a result record ran in. Records from before the ``precision`` field name it
    ``mixed_precision``, with ``none`` for float32."""
    if "precision" in record:
        return record["precision"]
    mixed = record.get("mixed_precision", "none")
    return "fp32" if mixed == "none" else mixed


def run_key(recipe: dict, peft_config: dict | None, precision: str) -> str:
    """What makes two runs the same run: the recipe, the precision it ran in (``auto`` means bf16
    on one machine and fp32 on another), and the full PEFT config, defaults included (so a changed
    default retrains instead of reusing an old result)."""
    return json.dumps({"recipe": recipe | {"precision": precision}, "peft_config": peft_config}, sort_keys=True)


def command_compare(args: argparse.Namespace) -> None:
    """Run the grid (resumable: finished runs are kept in runs.jsonl), then write the results.

    When every run is already finished and the results exist, nothing is written.
    """
    unknown = sorted(set(args.methods) - set(GRID_SIZES))
    if unknown:
        raise UsageError(f"unknown methods {unknown}; choose from {', '.join(GRID_SIZES)}.")
    precision = resolve_precision(args.precision)
    from .compare import counted, run_grid, write_results
    from .train import Recipe, train_and_evaluate

    out = Path(args.out)
    log = out / "runs.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    finished = {run_key(r["recipe"], r.get("peft_config"), ran_in(r)): r for r in done}
    recipes = [Recipe(method, epochs=args.epochs, train_size=args.train_size or None, method_options=options,
                      precision=args.precision)
               for method in args.methods for options in GRID_SIZES[method]]
    trained = []

    def train(recipe: Recipe) -> dict:
        key = run_key(asdict(recipe), recipe.peft_config_dict(), precision)
        if key in finished:
            return finished[key]
        check_sources(args.model, args.data_dir)
        _, record = train_and_evaluate(recipe, args.model, args.data_dir, progress=False)
        if is_main_process():
            out.mkdir(parents=True, exist_ok=True)
            with log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        trained.append(record)
        return record

    records = run_grid(recipes, args.seeds, train)
    if not is_main_process():
        return
    if not trained and (out / "results.json").exists():
        print(f"nothing new to train: all {counted(len(records), 'run')} reused from {log}; {out} is unchanged")
        return
    write_results(records, out, "adapterlib " + " ".join(sys.argv[1:]))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'comparison.png'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adapterlib", description="Parameter-efficient fine-tuning of BERT on SST-2.")
    commands = parser.add_subparsers(dest="command", required=True)

    def method_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--method", choices=METHODS, required=True)
        sub.add_argument("--r", type=int, help="adapter bottleneck width or LoRA rank")
        sub.add_argument("--placement", choices=("houlsby", "pfeiffer"), help="adapter placement")
        sub.add_argument("--target-modules", nargs="+", help="LoRA targets, e.g. query value")
        sub.add_argument("--num-virtual-tokens", type=int, help="prefix length")
        sub.add_argument("--pooling", choices=POOLINGS, default=DEFAULT_POOLING)
        sub.add_argument("--model", help="hub name or folder of a BERT-family model (default: the packaged MiniLM-L6)")

    def precision_argument(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--precision", choices=PRECISIONS, default="fp32",
                         help="fp32 (default); bf16: bfloat16 autocast, float32 weights; auto: bf16 where the hardware has it")

    train = commands.add_parser("train", help="train and evaluate one method, save the checkpoint")
    method_arguments(train)
    train.add_argument("--lr", type=float, help="learning rate (default: the method's recipe)")
    train.add_argument("--train-size", type=int, default=2_000, help="training examples; 0 = the whole split")
    train.add_argument("--epochs", type=float, default=3.0)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--evaluate-each-epoch", action="store_true", help="also report validation accuracy after every epoch")
    precision_argument(train)
    train.add_argument("--data-dir", help="GLUE-format SST-2 folder (default: $ADAPTERLIB_SST2_DIR, else the hub)")
    train.add_argument("--out", required=True, help="new directory for the checkpoint and metrics.json")
    train.set_defaults(run=command_train)

    predict = commands.add_parser("predict", help="classify sentences with a trained checkpoint")
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("text", nargs="*")
    predict.add_argument("--file", help="one sentence a line, or a TSV with a sentence (and label) column")
    predict.set_defaults(run=command_predict)

    compare = commands.add_parser("compare", help="train the grid of methods and sizes, write table and chart")
    compare.add_argument("--methods", nargs="+", default=list(GRID_SIZES))
    compare.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    compare.add_argument("--train-size", type=int, default=2_000)
    compare.add_argument("--epochs", type=float, default=3.0)
    precision_argument(compare)
    compare.add_argument("--model")
    compare.add_argument("--data-dir")
    compare.add_argument("--out", required=True)
    compare.set_defaults(run=command_compare)

    count = commands.add_parser("count", help="trainable / total parameters without training")
    method_arguments(count)
    count.set_defaults(run=command_count)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (UsageError, ValueError, TypeError, OSError) as error:
        message = " ".join(str(error).split())  # one line, also for the libraries' multi-line messages
        print(f"adapterlib {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adapterlib {args.command}: interrupted; {INTERRUPTED.get(args.command, 'nothing was changed')}", file=sys.stderr)
        return 130
    return 0
