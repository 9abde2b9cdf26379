r"""How much rank does SST-2 need? The update of full fine-tuning taken apart, and LoRA at each rank.

Full fine-tuning changes every weight matrix, :math:`W = W_0 + \Delta W`. On SST-2 with the
packaged MiniLM-L6 the study measures (the linear algebra is in :mod:`adapterlib.low_rank`):

a. one epoch of full fine-tuning over the whole training set, batch 32, the default learning rate;
b. the singular values of :math:`\Delta W` for the six weight matrices of every layer (:data:`MATRICES`);
c. validation accuracy with every :math:`\Delta W` of query and value (then of all six matrices)
   cut to its best rank-:math:`r` approximation, all else (embeddings, LayerNorms, biases, head) as fine-tuned;
d. LoRA on query and value at each rank, 3 seeds, with the comparison grid's recipe
   (records of ``results/runs.jsonl`` are reused when recipe, precision and fingerprints match);
e. Hu et al.'s (2021, §7) subspace similarity between LoRA updates of two ranks, of two seeds,
   and between LoRA's and full fine-tuning's updates of the same matrix.

Run from the repository (32 minutes for the committed results, on one core of a 2-core CPU with
bf16 instructions that other jobs shared; mostly the epoch over the whole training set)::

    python -m adapterlib.rank_study --data-dir ../shared/data/sst2 --out results/rank --overwrite

It writes five small JSON files to ``--out``, no weights; notebook 8 reads them with
``RankResults.load(folder)`` (:mod:`adapterlib.rank_widget`). What to know before running it:

* Every argument and input (the data folder, the model, the ``--runs`` file) is checked before
  the fine-tuning starts; a mistake stops the command at once with one line saying what to fix.
* Relative paths (``--out``, ``--runs``, ``--data-dir``, ``--model``) are resolved against the
  directory the command is started in.
* ``--out`` is a new (or empty) folder, or one that holds only the study's five files (:data:`RESULT_FILES`):
  replacing earlier results, such as the committed ones in ``results/rank`` that notebook 8 shows, takes
  ``--overwrite``, and only those five files are replaced. A folder with anything else in it, or one
  that is, holds or lies in the data folder or holds the ``--runs`` file, is refused. The files are
  written into a hidden folder beside ``--out`` and moved into it at the end, so a run that fails or is
  stopped (Ctrl-C, SIGTERM) leaves earlier results whole; the next run removes a hidden folder that a
  killed run left behind.
* Every rank must fit the model: at most its hidden size, the largest rank of its matrices.
* ``--runs results/runs.jsonl`` (the default) supplies the comparison grid's LoRA runs: a record is
  reused when its recipe (r, seed, learning rate, epochs, batch, training examples, ...), its full
  PEFT config, its precision and the fingerprints of model and data all equal this run's. A run
  whose weights the similarities need is trained anyway. The precision is ``auto``: bf16 on a CPU
  with bf16 instructions (and on a GPU that has it), fp32 on a CPU without, and then no bf16
  record matches and every LoRA run is trained.
* A smoke test of the whole pipeline (about a minute on one core; the numbers mean nothing)::

      python -m adapterlib.rank_study --out /tmp/rank-smoke --train-size 256 --lora-train-size 128 \
          --ranks 0 1 --lora-ranks 1 2 --seeds 0 --similarity-ranks 1 2

  With one seed there is no seed-against-seed similarity; notebook 8's figures leave it out and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from torch import nn

from .inject import base_linear, find_layers
from .low_rank import directions, low_rank, similarity_grid, subspace_similarity

MATRICES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
QUERY_VALUE = ("attention.self.query", "attention.self.value")
RANKS = (0, 1, 2, 4, 8, 16, 32, 64)  # and full rank, always
LORA_RANKS = (1, 2, 4, 8, 16, 32, 64)
SEEDS = (0, 1, 2)
SIMILARITY_RANKS = (8, 64)  # Hu et al.'s pair
FULL = "full"  # the rank of the untruncated update in the result files
RESULT_FILES = ("spectra.json", "truncation.json", "lora.json", "similarity.json", "study.json")


def rounded(values, digits: int = 5):
    """Floats (nested in lists) to ``digits`` significant digits, to keep the result files small."""
    if isinstance(values, list):
        return [rounded(v, digits) for v in values]
    return float(f"{values:.{digits}g}")


# ---------------------------------------------------------------- weights of a model


def matrices(model: nn.Module, names: tuple[str, ...] = MATRICES) -> dict[str, torch.Tensor]:
    """``{"{layer}.{matrix}": weight}``: the Linear weights themselves (under any LoRA wrapper)."""
    return {
        f"{index}.{name}": base_linear(layer.get_submodule(name)).weight
        for index, layer in enumerate(find_layers(model))
        for name in names
    }


def weight_deltas(
    pretrained: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    r""":math:`\Delta W = W - W_0` for every matrix, in float32."""
    return {name: (finetuned[name] - pretrained[name]).detach().float().cpu() for name in pretrained}


def lora_deltas(model: nn.Module, names: tuple[str, ...] = QUERY_VALUE) -> dict[str, torch.Tensor]:
    r"""LoRA's :math:`\Delta W = \frac{\alpha}{r} B A` for every targeted matrix of a trained model."""
    return {
        f"{index}.{name}": layer.get_submodule(name).active.delta_weight().detach().float().cpu()
        for index, layer in enumerate(find_layers(model))
        for name in names
    }


@torch.no_grad()
def set_truncated(
    model: nn.Module,
    pretrained: dict[str, torch.Tensor],
    finetuned: dict[str, torch.Tensor],
    svds: dict[str, tuple],
    r: int | None,
    names: tuple[str, ...],
) -> None:
    r"""Give every ``names`` matrix of ``model`` the weight :math:`W_0 + \Delta W_r`: exactly
    :math:`W_0` at ``r = 0``, exactly the fine-tuned weight at ``r = None``; the other matrices
    get their fine-tuned weight."""
    weights = matrices(model)
    for key, weight in weights.items():
        if r is None or key.split(".", 1)[1] not in names:
            weight.copy_(finetuned[key])
        else:
            weight.copy_(pretrained[key] + low_rank(*svds[key], r).to(weight))


@torch.no_grad()
def correct_answers(model: nn.Module, batches: list[dict], precision: str) -> str:
    """``"0110..."``: whether each validation sentence is classified right, under the autocast of
    ``precision``, in the order of ``batches``. The Trainer batches by length instead, so each
    sentence is padded differently; in bf16 that moves the logits by about 1e-3, and its accuracy
    for the same model can differ by a borderline sentence."""
    model.eval()
    device = next(model.parameters()).device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    right = []
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            right += (model(**batch).logits.argmax(-1) == labels).tolist()
    return "".join("1" if r else "0" for r in right)


def validation_batches(model_name: str | None, data_dir: str | None, size: int = 64) -> list[dict]:
    """The validation split, tokenised as for training, in batches of ``size`` in order."""
    from transformers import DataCollatorWithPadding

    from .train import load_tokenizer, tokenized_splits

    tokenizer = load_tokenizer(model_name)
    _, validation = tokenized_splits(tokenizer, data_dir, 1, "validation")
    collate = DataCollatorWithPadding(tokenizer)
    return [
        collate([validation[i] for i in range(start, min(start + size, len(validation)))])
        for start in range(0, len(validation), size)
    ]


def accuracy(correct: str) -> float:
    return correct.count("1") / len(correct)


# ---------------------------------------------------------------- the study's steps


def spectra(deltas: dict[str, torch.Tensor], pretrained: dict[str, torch.Tensor], layers: int) -> dict:
    """Singular values of every update and the Frobenius norms of the pre-trained weights."""
    values = {
        name: [rounded(torch.linalg.svdvals(deltas[f"{i}.{name}"].double()).tolist()) for i in range(layers)]
        for name in MATRICES
    }
    norms = {
        name: [rounded(pretrained[f"{i}.{name}"].double().norm().item()) for i in range(layers)]
        for name in MATRICES
    }
    return {
        "matrices": list(MATRICES),
        "layers": layers,
        "singular_values": values,
        "pretrained_frobenius_norm": norms,
    }


def truncation_runs(
    model, pretrained, finetuned, deltas, batches, precision: str, seed: int, ranks
) -> list[dict]:
    """Accuracy with the query and value updates, then all six, cut to each rank (``seed``: the
    fine-tuning run's)."""
    svds = {key: torch.linalg.svd(delta, full_matrices=False) for key, delta in deltas.items()}
    runs = []
    for targets, names in (("query,value", QUERY_VALUE), ("all", MATRICES)):
        for r in [*ranks, None]:
            set_truncated(model, pretrained, finetuned, svds, r, names)
            correct = correct_answers(model, batches, precision)
            runs.append(
                {
                    "targets": targets,
                    "r": FULL if r is None else r,
                    "accuracy": accuracy(correct),
                    "precision": precision,
                    "seed": seed,
                    "correct": correct,
                }
            )
            print(
                f"truncated {targets} to r={FULL if r is None else r}: {100 * accuracy(correct):.2f}%",
                flush=True,
            )
    set_truncated(model, pretrained, finetuned, svds, None, MATRICES)
    return runs


def similarities(
    lora: dict[tuple[int, int], dict[str, torch.Tensor]],
    full: dict[str, torch.Tensor],
    small: int,
    large: int,
) -> dict:
    r"""Hu et al.'s comparisons for every query and value matrix, on input and output directions.

    The directions are the singular vectors of each whole update (:func:`directions`), for LoRA of
    :math:`\Delta W = \frac{\alpha}{r} BA`: the input ones span the row space of :math:`A`, the output
    ones the column space of :math:`B` (when :math:`B` has rank :math:`r`). Hu et al. use the right
    singular vectors of :math:`A` alone: all :math:`r` of them span the same space as ours, but the
    top :math:`i < r` are ordered by the singular values of :math:`A`, ours by those of :math:`BA`.

    ``grids``: φ(i, j) for i <= ``small`` and j <= ``large`` between LoRA at rank ``small`` and at
    rank ``large`` (seed 0), and between LoRA at rank ``small`` and full fine-tuning.
    ``diagonals``: φ(i, i) for i <= ``large`` between the two seeds at rank ``large`` and between
    LoRA at rank ``large`` and full fine-tuning."""
    grids, diagonals = {}, {}
    for key in full:
        a, b = directions(lora[small, 0][key]), directions(lora[large, 0][key])
        f = directions(full[key])
        other_seed = directions(lora[large, 1][key]) if (large, 1) in lora else None
        for side in ("input", "output"):
            grids[f"{key}.{side}"] = {
                f"lora{small}_lora{large}": rounded(similarity_grid(a[side], b[side], small, large)),
                f"lora{small}_full": rounded(similarity_grid(a[side], f[side], small, large)),
            }
            diagonals[f"{key}.{side}"] = {
                f"lora{large}_full": rounded(
                    [subspace_similarity(b[side], f[side], i, i) for i in range(1, large + 1)]
                )
            }
            if other_seed is not None:
                diagonals[f"{key}.{side}"][f"lora{large}_seeds"] = rounded(
                    [subspace_similarity(b[side], other_seed[side], i, i) for i in range(1, large + 1)]
                )
    dimension = next(iter(full.values())).shape[0]
    return {"ranks": [small, large], "dimension": dimension, "grids": grids, "diagonals": diagonals}


def lora_study(
    train, runs_log: Path, ranks, seeds, similarity_ranks, lora_recipe, key
) -> tuple[list, list, dict]:
    """Every LoRA rank and seed: a matching record of ``runs_log`` is reused; a run whose weights the
    similarities need (seed 0 at the similarity ranks, seed 1 at the larger) is trained in any case."""
    from .runs import read_runs, record_key

    logged = {record_key(r): r for r in read_runs(runs_log)}
    small, large = similarity_ranks
    needs_weights = {(small, 0), (large, 0), (large, 1)}
    records, retrained, deltas = [], [], {}
    for r in ranks:
        for seed in seeds:
            recipe = replace(lora_recipe, method_options={"r": r}, seed=seed)
            old = logged.get(key(recipe))
            if old is not None:
                records.append(old | {"reused_from": str(runs_log)})
            if old is None or (r, seed) in needs_weights:
                model, record = train(recipe)
                deltas[r, seed] = lora_deltas(model)
                (records if old is None else retrained).append(record)
            print(
                f"lora r={r} seed {seed}: {100 * records[-1]['accuracy']:.2f}%{' (reused)' if old else ''}",
                flush=True,
            )
    return records, retrained, deltas


def lora_summary(records: list[dict]) -> list[dict]:
    """Per rank: mean accuracy over seeds and the two 95% intervals (seeds, sampling), in points."""
    from .compare import summarize

    return sorted(
        ({"r": int(row["variant"].split("=")[1])} | row for row in summarize(records)),
        key=lambda row: row["r"],
    )


def write(out: Path, name: str, content: dict, compact: bool = False) -> None:
    text = json.dumps(content, separators=(",", ":")) if compact else json.dumps(content, indent=2)
    (out / name).write_text(text + "\n")


def parse(argv: list[str] | None) -> argparse.Namespace:
    from .cli.checks import non_negative_int, positive_int

    title, *_ = __doc__.split("\n\n")
    notes = __doc__[__doc__.index("Run from the repository") :]
    parser = argparse.ArgumentParser(
        prog="python -m adapterlib.rank_study",
        description=title,
        epilog=notes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        required=True,
        help="a new or empty folder for the five result files, or one holding only them (with --overwrite)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results in an existing --out (needed for results/rank, the committed ones)",
    )
    parser.add_argument(
        "--data-dir", help="local GLUE SST-2 folder (default: $ADAPTERLIB_SST2_DIR, else the hub)"
    )
    parser.add_argument(
        "--model", help="base model, a hub name or a folder (default: the packaged MiniLM-L6)"
    )
    parser.add_argument(
        "--runs",
        default="results/runs.jsonl",
        help="run log whose matching LoRA records are reused instead of trained again; a file "
        "that is not there reuses nothing (default: %(default)s)",
    )
    parser.add_argument(
        "--train-size",
        type=non_negative_int,
        default=0,
        help="full fine-tuning's training examples, 0 for all 67,349 (default: %(default)s)",
    )
    parser.add_argument(
        "--lora-train-size",
        type=non_negative_int,
        default=2_000,
        help="LoRA's training examples, 0 for all; the comparison grid's recipe uses %(default)s "
        "(default: %(default)s)",
    )
    lists = (  # options that take one or more whole numbers
        (
            "--ranks",
            non_negative_int,
            RANKS,
            "ranks the fine-tuning update is cut to, 0 for no update; full rank is added",
        ),
        ("--lora-ranks", positive_int, LORA_RANKS, "ranks LoRA is trained at"),
        (
            "--seeds",
            non_negative_int,
            SEEDS,
            "LoRA's seeds; must include 0, and 1 for the seed-against-seed similarity",
        ),
    )
    for flag, number, default, meaning in lists:
        parser.add_argument(
            flag, type=number, nargs="+", default=list(default), help=f"{meaning} (default: %(default)s)"
        )
    parser.add_argument(
        "--similarity-ranks",
        type=positive_int,
        nargs=2,
        default=list(SIMILARITY_RANKS),
        metavar=("SMALL", "LARGE"),
        help="the two LoRA ranks whose directions are compared, both among --lora-ranks "
        "(default: %(default)s, Hu et al.'s pair)",
    )
    return parser.parse_args(argv)


def check(args: argparse.Namespace) -> None:
    """Everything that can be known to fail before the fine-tuning: the arguments, the data folder,
    the model, the ``--runs`` file and ``--out``. Raises UsageError."""
    from .cli.checks import (
        UsageError,
        check_data,
        check_out_location,
        check_sources,
        check_tokenizer,
        model_config,
    )
    from .modeling import resolve_model_name
    from .runs import read_runs

    for option, values in (
        ("--ranks", args.ranks),
        ("--lora-ranks", args.lora_ranks),
        ("--seeds", args.seeds),
    ):
        if len(set(values)) < len(values):
            raise UsageError(f"{option} {' '.join(map(str, values))} names a value twice; name each once.")
    small, large = args.similarity_ranks
    if not small < large or not {small, large} <= set(args.lora_ranks):
        raise UsageError(
            f"--similarity-ranks {small} {large}: name a smaller and a larger rank, both among --lora-ranks."
        )
    if 0 not in args.seeds:
        raise UsageError("--seeds must include 0: the similarities compare LoRA runs of seed 0.")
    check_sources(args.model, args.data_dir)
    check_data(args.data_dir, max(args.train_size, args.lora_train_size))
    model_name = resolve_model_name(args.model)
    check_ranks(args, model_config(model_name).hidden_size)
    check_tokenizer(model_name)
    runs = Path(args.runs)
    if runs.is_dir():
        raise UsageError(f"--runs {runs} is a folder; name the run log file, e.g. results/runs.jsonl.")
    try:
        read_runs(runs)  # a damaged line is named now, not after the fine-tuning
    except ValueError as error:
        raise UsageError(f"--runs: {error}") from None
    except OSError as error:
        raise UsageError(
            f"--runs {runs} cannot be read ({error.strerror}); name a readable run log."
        ) from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; name a folder for the results.")
    check_out_contents(out, args.overwrite)
    check_out_apart(
        out, {"--data-dir": args.data_dir or os.environ.get("ADAPTERLIB_SST2_DIR"), "--runs": runs}
    )
    check_out_location(out, out)


def check_ranks(args: argparse.Namespace, hidden_size: int) -> None:
    """Every rank fits the model: a matrix of the study is at most ``hidden_size`` wide, so that is
    its largest rank, and LoRA refuses a larger r."""
    from .cli.checks import UsageError

    for option, values in (("--ranks", args.ranks), ("--lora-ranks", args.lora_ranks)):
        too_large = [r for r in values if r > hidden_size]
        if too_large:
            raise UsageError(
                f"{option} {' '.join(map(str, too_large))}: more than the model's hidden size {hidden_size}, "
                f"the largest rank of its matrices; name ranks up to {hidden_size} (full rank is always added)."
            )


def check_out_contents(out: Path, overwrite: bool) -> None:
    """``--out`` holds nothing, or only the study's own files and ``--overwrite`` replaces them."""
    from .cli.checks import UsageError

    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    others = [name for name in present if name not in RESULT_FILES]
    if others:
        shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
        raise UsageError(
            f"--out {out} holds other files than the study's results ({shown}); the study writes only "
            f"{', '.join(RESULT_FILES)}, so name a folder of its own, e.g. {out / 'rank'}."
        )
    if present and not overwrite:
        raise UsageError(
            f"--out {out} holds earlier results; name a new folder, or add --overwrite to replace them."
        )


def check_out_apart(out: Path, inputs: dict[str, str | Path | None]) -> None:
    """``--out`` is not the data folder or the run log, does not hold them and is not inside them."""
    from .cli.checks import UsageError

    target = out.resolve()
    for option, path in inputs.items():
        if path is None:
            continue
        source = Path(path).resolve()
        if target == source or source.is_relative_to(target) or target.is_relative_to(source):
            raise UsageError(
                f"--out {out} is, holds or lies in {option} {path}; put the results in a folder of their own."
            )


def replace_folder(written: Path, out: Path) -> None:
    """Move the study's files from the finished ``written`` folder into ``out`` (the whole folder
    when ``out`` is not there); an earlier result file this run did not write is removed, and
    anything else in ``out`` is left alone."""
    if not out.exists():
        written.rename(out)
        return
    for name in RESULT_FILES:
        if (written / name).exists():
            os.replace(written / name, out / name)
        elif (out / name).exists():
            (out / name).unlink()
    shutil.rmtree(written)


def partial_folder(out: Path) -> Path:
    """The hidden folder beside ``out`` that this process writes the results into."""
    return out.with_name(f".{out.name}.partial-{os.getpid()}")


def remove_stale_partial_folders(out: Path) -> None:
    """Remove the hidden folders of earlier runs that were killed (their process is gone)."""
    for folder in out.parent.glob(f".{out.name}.partial-*"):
        pid = folder.name.rsplit("-", 1)[1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 checks the process exists and sends nothing
    except ProcessLookupError:
        return False
    except OSError:  # it exists, but belongs to another user (or this system cannot tell)
        return True
    return True


def stop_on_sigterm(signum, frame) -> None:
    """SIGTERM (``kill``, a job scheduler's stop) ends the study as Ctrl-C does, so it cleans up."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    from .cli.checks import UsageError

    args = parse(argv)
    try:
        check(args)
    except UsageError as error:
        print(f"python -m adapterlib.rank_study: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partial_folders(out)
    written = partial_folder(out)
    written.mkdir()  # with the user's umask
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        study(args, argv, written)
        replace_folder(written, out)
    except BaseException:
        shutil.rmtree(written, ignore_errors=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.json')))} to {out}", flush=True)


def study(args: argparse.Namespace, argv: list[str] | None, out: Path) -> None:
    """Run every step of the study, writing its five files into ``out``."""
    from .modeling import load_classifier, resolve_model_name, resolve_precision
    from .runs import fingerprints, run_key
    from .train import Recipe, library_versions, train_and_evaluate

    torch.set_num_threads(1)  # one core: another training job may use the other
    started = time.perf_counter()
    model_name = resolve_model_name(args.model)
    prints = fingerprints(model_name, args.data_dir)

    def train(recipe: Recipe):
        model, record = train_and_evaluate(recipe, args.model, args.data_dir, progress=False)
        return model, record | prints

    full_recipe = Recipe("full", epochs=1.0, train_size=args.train_size or None, batch_size=32)
    lora_recipe = Recipe("lora", train_size=args.lora_train_size or None)  # the comparison grid's recipe
    precision = resolve_precision(full_recipe.precision)

    def key(recipe: Recipe) -> str:
        return run_key(asdict(recipe), recipe.peft_config_dict(), precision, prints)

    model, full_record = train(full_recipe)
    print(
        f"full fine-tuning: {100 * full_record['accuracy']:.2f}% after {full_record['train_seconds']:.0f} s",
        flush=True,
    )
    pretrained = {
        k: w.detach().clone()
        for k, w in matrices(load_classifier(args.model, pooling=full_recipe.pooling)).items()
    }
    finetuned = {k: w.detach().clone() for k, w in matrices(model).items()}
    deltas = weight_deltas(pretrained, finetuned)
    layers = len(find_layers(model))
    write(out, "spectra.json", spectra(deltas, pretrained, layers), compact=True)

    batches = validation_batches(args.model, args.data_dir)
    runs = truncation_runs(
        model, pretrained, finetuned, deltas, batches, full_record["precision"], full_recipe.seed, args.ranks
    )
    write(
        out,
        "truncation.json",
        {
            "precision": full_record["precision"],
            "seed": full_recipe.seed,
            "fine_tuned_accuracy": full_record["accuracy"],
            "runs": runs,
        },
    )
    del model

    if not Path(args.runs).is_file():
        print(f"no run log at {Path(args.runs).resolve()}: every LoRA run is trained", flush=True)
    records, retrained, lora = lora_study(
        train, Path(args.runs), args.lora_ranks, args.seeds, args.similarity_ranks, lora_recipe, key
    )
    write(
        out,
        "lora.json",
        {
            "recipe": asdict(lora_recipe) | {"method_options": {"r": "see each record"}},
            "summary": lora_summary(records),
            "records": records,
            "retrained_for_weights": retrained,
        },
    )
    small = {key: delta for key, delta in deltas.items() if key.split(".", 1)[1] in QUERY_VALUE}
    write(
        out,
        "similarity.json",
        {"precision": precision, "seed": 0} | similarities(lora, small, *args.similarity_ranks),
        compact=True,
    )
    write(
        out,
        "study.json",
        {
            "command": "python -m adapterlib.rank_study "
            + shlex.join(argv if argv is not None else sys.argv[1:]),
            "full_recipe": asdict(full_recipe),
            "full_record": full_record,
            "lora_recipe": asdict(lora_recipe),
            "ranks": args.ranks,
            "lora_ranks": args.lora_ranks,
            "seeds": args.seeds,
            "precision": precision,
            "reused_lora_runs": sum("reused_from" in r for r in records),
            "trained_lora_runs": len(lora),
            "environment": library_versions()
            | {"device": full_record["device"], "torch_threads": torch.get_num_threads()},
            "wall_seconds": round(time.perf_counter() - started),
            **prints,
        },
    )
    print(f"the study took {(time.perf_counter() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
