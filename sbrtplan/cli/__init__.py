"""Command line: ``sbrtplan <command> ...``.

Each command lives in its own module of this package and exposes
``register(subparsers)`` which adds its parser and sets ``func``; ``func(args)``
returns the exit status.  Errors the user can cause (:class:`SbrtplanError`)
are printed as one line and give exit status 2; any other exception is
summarised on one line with the path of its saved traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .._version import __version__
from ..errors import SbrtplanError

# Order is the order of ``sbrtplan --help``.
COMMANDS = [
    "demo",
    "plan",
    "evaluate",
    "recompute",
    "mucheck",
    "qa-plan",
    "qa-compare",
    "dij",
    "commission",
    "compare-fractions",
    "compare-techniques",
    "benchmark",
    "batch",
    "info",
    "protocols",
    "seeds",
    "tbi",
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
        print(f"sbrtplan {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbrtplan: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        saved = _save_traceback(args.command)
        print(f"sbrtplan {args.command}: error: out of memory; use a coarser --grid-mm or fewer beams "
              f"(traceback saved to {saved})", file=sys.stderr)
        return 1
    except Exception as exc:  # the one exit path of an unexpected failure: one line, traceback in a file
        saved = _save_traceback(args.command)
        print(f"sbrtplan {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              f"(traceback saved to {saved}; please report it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException, max_chars: int = 600) -> str:
    """The message of ``exc`` on one line (a terminal line, not a dump)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= max_chars else text[:max_chars - 3] + "..."


def _save_traceback(command: str | None) -> str:
    """Write the current exception's traceback to a log file (never the output folder); return its path.

    The folder is ``$SBRTPLAN_LOG_DIR`` when set, else ``<temp>/sbrtplan-logs``.
    """
    import os
    import tempfile
    import time
    import traceback

    text = traceback.format_exc()
    folder = os.environ.get("SBRTPLAN_LOG_DIR") or os.path.join(tempfile.gettempdir(), "sbrtplan-logs")
    name = f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{command or 'sbrtplan'}.txt"
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"sbrtplan {__version__}, command line: {' '.join(sys.argv)}\n{text}")
        return path
    except OSError:  # nowhere to save it: the last frame at least, still on one line
        last = traceback.extract_tb(sys.exc_info()[2])[-1:] or None
        return f"not saved; raised at {last[0].filename}:{last[0].lineno}" if last else "not saved"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
