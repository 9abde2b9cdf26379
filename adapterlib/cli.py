"""``python -m adapterlib`` / ``adapterlib``: train, predict and count from the command line.

    adapterlib train --method lora --r 8 --out runs/lora
    adapterlib predict --checkpoint runs/lora "a gripping, funny film" "a dull mess"
    adapterlib count --method adapter --r 16
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file

from .checkpoint import load_adapter, save_adapter
from .counting import bert_parameter_count, head_parameter_count, method_parameter_count
from .data import LABEL_NAMES
from .modeling import POOLINGS, load_classifier, load_tokenizer, model_location, resolve_model_name
from .peft_model import PeftModel
from .compare import run_grid, write_results
from .train import DEFAULT_POOLING, METHODS, Recipe, changes_from_seed_recipe, peft_config_for, train_and_evaluate

TRAINED_TENSORS = "model.safetensors"


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


def recipe_from(args: argparse.Namespace) -> Recipe:
    return Recipe(
        method=args.method,
        learning_rate=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        train_size=args.train_size or None,
        seed=args.seed,
        pooling=args.pooling,
        method_options=method_options(args),
    )


def save_trained(model, out: Path, record: dict) -> None:
    """The adapter checkpoint (PEFT methods) or the trained tensors (full, head), then metrics.json."""
    if isinstance(model, PeftModel):
        save_adapter(model, out, base_model_name=record["model"])
    else:
        trained = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trained, out / TRAINED_TENSORS)
    (out / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def command_train(args: argparse.Namespace) -> None:
    recipe = recipe_from(args)
    recipe.peft_config()  # bad method options fail here, before any data or model is loaded
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty; choose a new directory.")
    model, record = train_and_evaluate(recipe, args.model, args.data_dir, output_dir=str(out / "trainer"), progress=True,
                                       evaluate_each_epoch=args.evaluate_each_epoch)
    out.mkdir(parents=True, exist_ok=True)
    record["changes_from_seed_recipe"] = changes_from_seed_recipe(recipe)
    save_trained(model, out, record)
    print(
        f"{record['method']}: validation accuracy {100 * record['accuracy']:.2f}% | trainable "
        f"{record['trainable_parameters']:,} of {record['total_parameters']:,} ({100 * record['trainable_fraction']:.2f}%) | "
        f"{record['train_seconds']:.0f} s | saved to {out}"
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


def run_key(recipe: dict, peft_config: dict | None) -> str:
    """What makes two runs the same run: the recipe and the full PEFT config, defaults included
    (so a changed default retrains instead of reusing an old result)."""
    return json.dumps({"recipe": recipe, "peft_config": peft_config}, sort_keys=True)


def command_compare(args: argparse.Namespace) -> None:
    """Run the grid (resumable: finished runs are kept in runs.jsonl), then write the results."""
    unknown = sorted(set(args.methods) - set(GRID_SIZES))
    if unknown:
        raise UsageError(f"unknown methods {unknown}; choose from {', '.join(GRID_SIZES)}.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    finished = {run_key(r["recipe"], r.get("peft_config")): r for r in done}
    recipes = [Recipe(method, epochs=args.epochs, train_size=args.train_size or None, method_options=options)
               for method in args.methods for options in GRID_SIZES[method]]

    def train(recipe: Recipe) -> dict:
        key = run_key(asdict(recipe), recipe.peft_config_dict())
        if key in finished:
            return finished[key]
        _, record = train_and_evaluate(recipe, args.model, args.data_dir, output_dir=str(out / "trainer"), progress=False)
        with log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        return record

    records = run_grid(recipes, args.seeds, train)
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

    train = commands.add_parser("train", help="train and evaluate one method, save the checkpoint")
    method_arguments(train)
    train.add_argument("--lr", type=float, help="learning rate (default: the method's recipe)")
    train.add_argument("--train-size", type=int, default=2_000, help="training examples; 0 = the whole split")
    train.add_argument("--epochs", type=float, default=3.0)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--evaluate-each-epoch", action="store_true", help="also report validation accuracy after every epoch")
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
    except (UsageError, ValueError, TypeError, FileNotFoundError) as error:
        print(f"adapterlib {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
