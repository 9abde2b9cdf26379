"""``python -m adapterlib`` / ``adapterlib``: train, predict, compare and count from the command
line, and check that this machine is ready for the notebooks.

    adapterlib train --method lora --r 8 --out runs/lora
    adapterlib predict --checkpoint runs/lora "a gripping, funny film" "a dull mess"
    adapterlib count --method adapter --r 16
    adapterlib check-setup
    torchrun --nproc_per_node 2 -m adapterlib -- train --method lora --r 8 --out runs/lora

The last line trains one model in two processes (``--`` keeps torchrun from reading ``--r`` as
an abbreviation of one of its own options).

A mistake in a command is reported in one line on stderr, ``adapterlib <command>: error: ...``,
saying what is wrong and how to put it right, with exit code 2 and no file written. Everything
is checked before anything slow happens: the numbers as they are parsed, then the method's
options, the output folder, every row of the data, the model, built on the ``meta`` device
(shapes only, no weights) with the method applied to it, the number of steps, and the memory and
disk the run will need. Only then are the training modules (the ``Trainer``, ``datasets``)
imported. Any other exception is a bug, and shows its traceback; a finished run that cannot be
moved to ``--out`` is kept where it was written, named on stderr, with exit code 1.

This module holds the parser and :func:`main`; the checks are in :mod:`.checks`, and each command
in its own module: :mod:`.train_command` (``train``, ``count``), :mod:`.predict_command` and
:mod:`.compare_command`.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from ..methods import methods, training_choices
from ..modeling import DEFAULT_POOLING, DEFAULT_PRECISION, POOLINGS, PRECISIONS
from ..quantize import QUANTIZATIONS
from ..runs import model_fingerprint, ran_in, run_key
from ..setup_check import main as check_setup
from .checks import UsageError, method_flags, non_negative_int, option_fields, positive_float, positive_int
from .compare_command import command_compare, grid_sizes
from .predict_command import command_predict
from .train_command import TRAINED_TENSORS, RunKept, command_count, command_train, save_trained

__all__ = [  # what callers and tests import from adapterlib.cli
    "TRAINED_TENSORS",
    "UsageError",
    "build_parser",
    "grid_sizes",
    "main",
    "model_fingerprint",
    "ran_in",
    "run_key",
    "save_trained",
]

INTERRUPTED = {
    "train": "nothing was saved",
    "compare": "finished runs are kept in runs.jsonl; the same command resumes",
}


class Parser(argparse.ArgumentParser):
    """argparse, reporting its errors like every other mistake: one line, no usage block, then
    exit code 2 (``SystemExit``, as argparse does)."""

    def error(self, message: str) -> NoReturn:
        listed = "the options" if " " in self.prog else "the commands"
        self.exit(report_error(self.prog, f"{message}; `{self.prog} --help` lists {listed}."))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="adapterlib", description="Parameter-efficient fine-tuning of BERT on SST-2.")
    commands = parser.add_subparsers(dest="command", required=True)

    def method_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--method", choices=training_choices(), required=True)
        for field, flag in method_flags().items():
            defaults = {
                m.label: getattr(m.config_class(), field) for m in methods() if field in option_fields(m)
            }
            default = next(iter(defaults.values()))
            shown = ", ".join(
                f"{label} {' '.join(v) if isinstance(v, tuple) else v}" for label, v in defaults.items()
            )
            described = f"{field.replace('_', ' ')} (default: {shown})"
            if isinstance(default, tuple):
                sub.add_argument(flag, nargs="+", help=described)
            elif isinstance(default, int):
                sub.add_argument(flag, type=positive_int, help=described)
            elif isinstance(default, float):
                sub.add_argument(flag, type=positive_float, help=described)
            else:
                choices = next(m.explorer_choices[field] for m in methods() if field in m.explorer_choices)
                sub.add_argument(flag, choices=choices, help=described)
        sub.add_argument("--pooling", choices=POOLINGS, default=DEFAULT_POOLING)
        sub.add_argument(
            "--model", help="hub name or folder of a BERT-family model (default: the packaged MiniLM-L6)"
        )

    def precision_argument(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--precision",
            choices=PRECISIONS,
            default=DEFAULT_PRECISION,
            help="auto (default): bf16 where the hardware computes it, else fp32; "
            "bf16: bfloat16 autocast, float32 weights; fp32: float32 throughout",
        )

    train = commands.add_parser("train", help="train and evaluate one method, save the checkpoint")
    method_arguments(train)
    train.add_argument("--lr", type=positive_float, help="learning rate (default: the method's recipe)")
    train.add_argument(
        "--train-size", type=non_negative_int, default=2_000, help="training examples; 0 = the whole split"
    )
    train.add_argument("--epochs", type=positive_float, default=3.0)
    train.add_argument("--batch-size", type=positive_int, default=16)
    train.add_argument("--seed", type=non_negative_int, default=0)
    train.add_argument(
        "--evaluate-each-epoch", action="store_true", help="also report validation accuracy after every epoch"
    )
    precision_argument(train)
    train.add_argument(
        "--base-quantization",
        choices=QUANTIZATIONS,
        default="none",
        help="store the frozen base in 4-bit NF4 (QLoRA) or int8 (adapterlib.quantize); default: none",
    )
    train.add_argument(
        "--data-dir", help="GLUE-format SST-2 folder (default: $ADAPTERLIB_SST2_DIR, else the hub)"
    )
    train.add_argument("--out", required=True, help="new directory for the checkpoint and metrics.json")
    train.set_defaults(run=command_train)

    predict = commands.add_parser("predict", help="classify sentences with a trained checkpoint")
    predict.add_argument("--checkpoint", required=True, help="the --out folder of `adapterlib train`")
    predict.add_argument("text", nargs="*", help="sentences to classify (or --file)")
    predict.add_argument(
        "--file",
        help="UTF-8 text: a TSV whose header (any case) names a sentence column and perhaps a label "
        "column; else sentence<TAB>label lines if any line has a tab; else one sentence a line "
        "(labels: 0/1 or negative/positive)",
    )
    predict.set_defaults(run=command_predict)

    compare = commands.add_parser(
        "compare",
        help="train the grid of methods and sizes, write table and chart",
        description="Train every method at several sizes and seeds, then write results.json, results.md and "
        "comparison.png into --out. Finished runs are kept in --out/runs.jsonl with fingerprints of the "
        "data and the model, and reused when the same command (or a smaller grid) runs again. The table "
        "shows every finished run of this data, model, train size, epochs and precision, whichever "
        "--methods and --seeds are named (a run shown before stays until it is retrained); a folder "
        "holding results of other settings is refused.",
    )
    compare.add_argument("--methods", nargs="+", default=list(grid_sizes()))
    compare.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2])
    compare.add_argument(
        "--train-size", type=non_negative_int, default=2_000, help="training examples; 0 = the whole split"
    )
    compare.add_argument("--epochs", type=positive_float, default=3.0)
    precision_argument(compare)
    compare.add_argument("--model")
    compare.add_argument("--data-dir")
    compare.add_argument(
        "--out", required=True, help="the results folder: new, or one `compare` wrote (it resumes)"
    )
    compare.set_defaults(run=command_compare)

    count = commands.add_parser("count", help="trainable / total parameters without training")
    method_arguments(count)
    count.set_defaults(run=command_count)

    setup = commands.add_parser(
        "check-setup",
        help="check that this machine is ready for the notebooks (about 30 s)",
        description="Check Python, torch, the libraries, the SST-2 data, Jupyter and the packaged model, "
        "one line each; exit code 1 if a required check failed.",
    )
    setup.set_defaults(run=lambda args: check_setup([]))
    return parser


def report_error(prog: str, message: str) -> int:
    """Report a mistake: one line on stderr (a library's multi-line message joined), exit code 2."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args, unrecognized = parser.parse_known_args(argv)
    except SystemExit as stop:  # --help (0), or a mistake argparse found and reported (2)
        return stop.code
    prog = f"adapterlib {args.command}"
    if unrecognized:
        return report_error(
            prog, f"unrecognized arguments: {' '.join(unrecognized)}; `{prog} --help` lists the options."
        )
    args.command_line = " ".join(["adapterlib", *argv])
    try:
        code = args.run(args)  # None, or the exit code of a command that sets its own (check-setup)
    except UsageError as error:
        return report_error(prog, str(error))
    except RunKept as kept:  # not a mistake in the command: the run is safe elsewhere
        print(f"{prog}: {kept}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {INTERRUPTED.get(args.command, 'nothing was changed')}", file=sys.stderr)
        return 130
    return code or 0
