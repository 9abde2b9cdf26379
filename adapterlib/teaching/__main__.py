"""``python -m adapterlib.teaching build | measure | fit | tables``: see :mod:`adapterlib.teaching`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .plan import MEASUREMENTS_FILE, check_plan, fits, read_measurements, read_plan


def command_build(args: argparse.Namespace) -> int:
    from .build import build

    for path in build(Path(args.out), args.reveal_prefix, args.pdf):
        print(path)
    return 0


def command_measure(args: argparse.Namespace) -> int:
    from .measure import measure

    target = Path(args.out)
    previous = read_measurements(target) if target.exists() else None
    result = measure(args.notebooks, previous, args.timeout, not args.words_only, args.committed_only)
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(target)
    return 0


def command_fit(args: argparse.Namespace) -> int:
    plan = read_plan()
    check_plan(plan)
    rows = fits(plan, read_measurements())
    for row in rows:
        in_time = "in time" if row.runs_in_time else "NOT in time"
        print(
            f"{row.notebook:24} {row.minutes:3d} min budget, needs {row.needed:4.1f}: "
            f"{row.shown_words} words at {plan['rates']['speaking_words_per_minute']}/min = {row.speaking:.1f}, "
            f"exercise {row.exercise:g}, discussion {row.discussion:g}; Run all {row.running:.1f} ({in_time})"
        )
    late = [row.notebook for row in rows if not row.fits]
    print(
        f"does not fit: {', '.join(late)}"
        if late
        else f"every segment fits; {plan['minutes']} minutes in all"
    )
    return 1 if late else 0


def command_tables(args: argparse.Namespace) -> int:
    from .report import tables, write_readme_times, write_tables

    measurements = read_measurements()
    current = tables(read_plan(), measurements)
    if args.write:
        write_tables(current)
        write_readme_times(measurements)
    else:
        print("\n\n".join(current.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapterlib.teaching")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="slides and handout for the class plan")
    build.add_argument("--out", required=True, help="the folder to write into (created if needed)")
    build.add_argument("--reveal-prefix", help="where reveal.js 4 lies, to render without a network")
    build.add_argument("--pdf", action="store_true", help="also print the handout to PDF (needs Chromium)")
    build.set_defaults(run=command_build)
    measure = commands.add_parser("measure", help="count words and time the notebooks (minutes)")
    measure.add_argument("--notebooks", nargs="+", default=None, help="stems to time; default: all")
    measure.add_argument("--words-only", action="store_true", help="recount words, keep the run times")
    measure.add_argument(
        "--committed-only",
        action="store_true",
        help="notebooks 3-5: time only the run with committed adapters",
    )
    measure.add_argument("--out", default=str(MEASUREMENTS_FILE), help="the JSON to update")
    measure.add_argument("--timeout", type=int, default=1800, help="seconds a notebook may run")
    measure.set_defaults(run=command_measure)
    commands.add_parser("fit", help="each segment's minutes against what it needs").set_defaults(
        run=command_fit
    )
    tables = commands.add_parser("tables", help="the tables TEACHING.md quotes, from the measurements")
    tables.add_argument(
        "--write", action="store_true", help="put them into TEACHING.md, and the run times into README"
    )
    tables.set_defaults(run=command_tables)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
