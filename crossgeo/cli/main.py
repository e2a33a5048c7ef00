"""The ``crossgeo`` parser, dispatch and error handling.

Adding a command: write ``crossgeo/cli/NAME.py`` with ``add_parser(subparsers, parents)``
(returning its parser) and ``run(args) -> int``, and add ``"NAME"`` to `COMMANDS`.
Errors are one line on stderr (``--debug`` shows the traceback); the exit status is 0 on
success, 1 on failure or validation problems and 2 for usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap
from collections.abc import Sequence

from crossgeo.cli.common import CliError, one_line, readable_warnings, require_cli_extra
from crossgeo.errors import CrossgeoError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = ("demo", "preview", "stats", "index", "validate", "windows", "chips", "stac", "predict", "evaluate")
"""The command modules under ``crossgeo/cli/``, in the order ``--help`` lists them."""

log = logging.getLogger("crossgeo")


def build_parser() -> argparse.ArgumentParser:
    """The ``crossgeo`` parser with every command of `COMMANDS` (each module's ``run`` as ``func``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show crossgeo's log messages"
    )
    parser = argparse.ArgumentParser(
        prog="crossgeo",
        description="Look at, check and measure crossgeo patch datasets; predict whole scenes and evaluate them.",
        epilog="Start with:  crossgeo demo\nThen:        crossgeo validate|preview|stats|index|windows CONFIG.yaml "
        "(each has --help)\n"
        "             crossgeo predict CONFIG.yaml --model FILE, then crossgeo evaluate PREDICTION CONFIG.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    from crossgeo import __version__

    parser.add_argument("--version", action="version", version=f"crossgeo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"crossgeo.cli.{name}")
        subparser = module.add_parser(subparsers, [common])
        subparser.set_defaults(func=module.run)
        # The raw formatter keeps lines as written (for the examples): wrap the description here.
        subparser.description = textwrap.fill(subparser.description or "", 88)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``crossgeo`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logging.INFO if getattr(args, "verbose", False) else logging.WARNING
    previous = log.level
    log.addHandler(handler)
    log.setLevel(level)
    try:
        require_cli_extra()  # one line naming the extra, before a command writes anything
        with readable_warnings():
            return int(args.func(args))
    except KeyboardInterrupt:
        print("crossgeo: interrupted", file=sys.stderr)
        return 130
    except (CliError, CrossgeoError) as error:
        if debug:
            raise
        print(f"crossgeo {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(
            f"crossgeo {args.command}: error: {type(error).__name__}: {one_line(error)} (run with --debug for details)",
            file=sys.stderr,
        )
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)
