"""The ``compare`` command: the grid of methods and sizes, and the log of finished runs it resumes from.

Every finished run is a line of ``runs.jsonl``. :func:`adapterlib.runs.run_key` says when two
runs are the same run, so that a rerun reuses it; :func:`shown_runs` refuses an ``--out`` folder
whose results a comparison would drop. The grid's methods and sizes come from the registry
(:func:`grid_sizes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

from ..methods import entries
from ..modeling import is_main_process, needs_hub, resolve_model_name, resolve_precision
from ..runs import FINGERPRINTS, fingerprints, is_run_record, ran_in, read_runs, record_key, run_key
from .checks import (
    UsageError,
    check_data,
    check_method,
    check_out_location,
    check_sources,
    check_tokenizer,
    model_config,
    read_json,
)

SETTING_NAMES = {
    "train_size": "--train-size",
    "epochs": "--epochs",
    "precision": "precision",
    "data_fingerprint": "data fingerprint",
    "model_fingerprint": "model fingerprint",
}


def grid_sizes() -> dict[str, list[dict]]:
    """``{method or baseline: [method options of each size the grid trains]}``, from the registry now."""
    return {
        entry.name: [{entry.size.field: size} for size in entry.size.grid] if entry.size else [{}]
        for entry in entries()
    }


def slot(record: dict) -> str:
    """Which cell of a grid a run fills: its method, method options and seed."""
    return json.dumps(
        [record["method"], record["recipe"]["method_options"], record["recipe"]["seed"]], sort_keys=True
    )


def without_fingerprints(record: dict) -> str:
    """A record as text, fingerprints left out: results.json files written before records
    carried fingerprints list their runs without them."""
    return json.dumps({k: v for k, v in record.items() if k not in FINGERPRINTS}, sort_keys=True)


def other_settings(record: dict, settings: dict) -> list[str]:
    """How ``record`` was made differently from ``settings`` (train size, epochs, precision, data,
    model); a fingerprint a record lacks is not compared."""
    made = {
        "train_size": record["recipe"].get("train_size"),
        "epochs": record["recipe"].get("epochs"),
        "precision": ran_in(record),
        **{name: record.get(name) for name in FINGERPRINTS},
    }
    return [
        f"{SETTING_NAMES[name]} {made[name]} there, {settings[name]} here"
        for name in settings
        if made[name] != settings[name] and not (name in FINGERPRINTS and made[name] is None)
    ]


def shown_runs(out: Path, done: list[dict], settings: dict) -> list[dict]:
    """The runs ``out/results.json`` shows (none without the file), after refusing a folder whose
    results a comparison with ``settings`` would drop: runs that ``done`` (runs.jsonl) lacks, or
    runs of another experiment."""
    results_file = out / "results.json"
    if not results_file.exists():
        return []
    shown = read_json(results_file, "move it away, or choose a new --out.").get("runs", [])
    damaged = (
        "is not a list"
        if not isinstance(shown, list)
        else next(
            (f"entry {i} is not a run record" for i, r in enumerate(shown) if not is_run_record(r)), None
        )
    )
    if damaged:
        raise UsageError(
            f'{results_file}: its "runs" {damaged} (method, recipe, ...); repair the file from '
            f"{out / 'runs.jsonl'}, move it away, or choose a new --out."
        )
    logged = {without_fingerprints(r): r for r in done}
    unlogged = [r for r in shown if without_fingerprints(r) not in logged]
    if unlogged:
        raise UsageError(
            f"{out / 'runs.jsonl'} lacks runs that {results_file} shows ({len(unlogged)} of {len(shown)}); "
            f"rewriting the results would drop them. Restore runs.jsonl, or choose a new --out."
        )
    differences = next(
        (d for r in shown if (d := other_settings(logged[without_fingerprints(r)], settings))), None
    )
    if differences:
        raise UsageError(
            f"--out {out} holds the results of another experiment ({', '.join(differences)}); this command "
            f"would drop them from results.json. Repeat its settings, or choose a new --out."
        )
    return shown


def command_compare(args: argparse.Namespace) -> None:
    """Run the grid (resumable: finished runs are kept in runs.jsonl), then write the results.

    One ``--out`` folder holds one experiment: one data set, one model, one train size, number of
    epochs and precision. ``results.json``, ``results.md`` and ``comparison.png`` show every
    finished run of it in ``runs.jsonl`` that this command would reuse, had it named the run's
    method, options and seed, whichever ``--methods`` and ``--seeds`` it names; a run shown
    before stays until a run of the same method, options and seed replaces it (after a default
    changed). So a smaller grid never drops a run from the table. A run made on other data,
    another model or with other settings stays in ``runs.jsonl``, neither reused nor shown; a
    folder whose ``results.json`` shows runs of another experiment (or runs that ``runs.jsonl``
    lacks) is refused before anything trains. When nothing new was trained and ``results.json``
    already shows exactly these runs, nothing is written.
    """
    sizes = grid_sizes()
    unknown = sorted(set(args.methods) - set(sizes))
    if unknown:
        raise UsageError(f"unknown methods {', '.join(unknown)}; choose from {', '.join(sizes)}.")
    precision = resolve_precision(args.precision)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(
            f"--out {out} is a file; name a folder for the results (a new one, or one `compare` wrote)."
        )
    if (
        out.is_dir()
        and any(out.iterdir())
        and not any((out / name).exists() for name in ("runs.jsonl", "results.json"))
    ):
        raise UsageError(
            f"--out {out} holds files that `compare` did not write (no runs.jsonl or results.json); "
            f"choose a new folder."
        )
    check_out_location(out, out / "results.json")
    check_data(args.data_dir, args.train_size)
    model_name = resolve_model_name(args.model)
    if not needs_hub(model_name):
        model_config(model_name)  # a folder is fingerprinted by its files: check they are there
    prints = fingerprints(model_name, args.data_dir)
    log, results_file = out / "runs.jsonl", out / "results.json"
    try:
        done = read_runs(log)
    except ValueError as error:
        raise UsageError(str(error)) from None
    settings = {
        "train_size": args.train_size or None,
        "epochs": args.epochs,
        "precision": precision,
        **prints,
    }
    shown = shown_runs(out, done, settings)
    from ..compare import counted, run_grid, write_results
    from ..train import Recipe, train_and_evaluate

    def key(recipe: Recipe) -> str:
        return run_key(asdict(recipe), recipe.peft_config_dict(), precision, prints)

    def current(record: dict) -> bool:
        """Whether this command would reuse ``record``, had it asked for its method, options and seed."""
        try:
            recipe = Recipe(
                record["method"],
                epochs=args.epochs,
                train_size=args.train_size or None,
                precision=args.precision,
                method_options=record["recipe"]["method_options"],
                seed=record["recipe"]["seed"],
            )
            return key(recipe) == record_key(record)
        except (TypeError, ValueError):  # a method or an option that no longer exists
            return False

    finished = {record_key(r): r for r in done}
    recipes = [
        Recipe(
            method,
            epochs=args.epochs,
            train_size=args.train_size or None,
            method_options=options,
            precision=args.precision,
        )
        for method in args.methods
        for options in sizes[method]
    ]
    if any(key(dataclasses.replace(r, seed=seed)) not in finished for r in recipes for seed in args.seeds):
        check_sources(args.model, args.data_dir)
        config = model_config(model_name)
        for recipe in recipes:
            check_method(model_name, config, recipe.method, recipe.method_options, recipe.pooling)
        check_tokenizer(model_name)
    trained = []

    def train(recipe: Recipe) -> dict:
        if key(recipe) in finished:
            return finished[key(recipe)]
        _, record = train_and_evaluate(recipe, args.model, args.data_dir, progress=False)
        record |= prints
        finished[key(recipe)] = record  # a seed or method named twice trains once
        if is_main_process():
            out.mkdir(parents=True, exist_ok=True)
            with log.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
        trained.append(record)
        return record

    grid = run_grid(recipes, args.seeds, train)
    if not is_main_process():
        return
    replaced = {slot(r) for r in done + trained if current(r)}
    kept = {without_fingerprints(r) for r in shown if slot(r) not in replaced}
    records = list(
        {record_key(r): r for r in done + trained if current(r) or without_fingerprints(r) in kept}.values()
    )
    same_runs = sorted(map(without_fingerprints, shown)) == sorted(map(without_fingerprints, records))
    if not trained and results_file.exists() and same_runs:
        print(f"nothing new to train: all {counted(len(grid), 'run')} reused from {log}; {out} is unchanged")
        return
    write_results(records, out, args.command_line)
    print(
        f"wrote {out / 'results.json'}, {out / 'results.md'} and {out / 'comparison.png'} "
        f"({counted(len(records), 'run')}, {len(trained)} new)"
    )
