"""The ``twin`` command line: one sub-command per job; it alone reads files, flags and environment."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scenes.errors import LineFileError, TwinError
from twin.commands import COMMAND_MODULES

log = logging.getLogger("twin")

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "scenes" / "examples"


def _cmd_validate(args: argparse.Namespace) -> int:
    from scenes.lineparse import load_line

    status = 0
    for f in args.files:
        try:
            spec = load_line(f)
        except LineFileError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            status = 1
            continue
        n_conv = sum(1 for b in spec.buffers if b.conveyor is not None)
        print(
            f"{f}: ok: line '{spec.name}', {len(spec.stations)} stations, "
            f"{len(spec.buffers)} buffer(s) ({n_conv} conveyors), {len(spec.sources)} timed sources"
        )
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twin",
        description="Industrial digital-twin engine: validate, render and simulate production lines.",
        epilog="Run 'twin COMMAND --help' for the options of a command.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("validate", help="check line files and report every problem")
    p.add_argument("files", nargs="+", metavar="FILE", help="line files (YAML)")
    p.set_defaults(func=_cmd_validate)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Compiled process-core programs are kept across runs (a line's first start compiles for
    # tens of seconds on a small CPU; later starts load it). JAX_COMPILATION_CACHE_DIR overrides.
    os.environ.setdefault(
        "JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "twin" / "jax-compilation")
    )
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result: int = args.func(args)
        return result
    except LineFileError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
