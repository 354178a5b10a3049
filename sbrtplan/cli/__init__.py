"""Command line: ``sbrtplan <command> ...``.

Each command lives in its own module of this package and exposes
``register(subparsers)`` which adds its parser and sets ``func``; ``func(args)``
returns the exit status.  Errors the user can cause (:class:`SbrtplanError`)
are printed as one line and give exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import SbrtplanError

# Order is the order of ``sbrtplan --help``.
COMMANDS = [
    "demo",
    "plan",
    "evaluate",
    "recompute",
    "mucheck",
    "dij",
    "commission",
    "compare-fractions",
    "compare-techniques",
    "benchmark",
    "batch",
    "info",
    "protocols",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sbrtplan",
        description="Automatic SBRT treatment planning: import, dose, optimisation, evaluation, export.")
    parser.add_argument("--version", action="version", version=f"sbrtplan {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".{name.replace('-', '_')}", __name__).register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sbrtplan").setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except SbrtplanError as exc:
        print(f"sbrtplan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbrtplan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
