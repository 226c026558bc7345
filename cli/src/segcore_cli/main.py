"""Entry point of the ``segcore`` command.

Each sub-command lives in ``segcore_cli.commands.<name>`` with ``register(subparsers)`` (builds its parser;
must not import torch) and ``run(args) -> int``. User errors, bad flag values included, print one line on stderr
and exit 2; ``--debug`` shows the traceback. An error may carry its own ``exit_code`` (a run stopped by SIGTERM
exits 143, as the shell reports a process killed by it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from segcore_cli import __version__

COMMANDS: tuple[str, ...] = ("list", "train", "eval", "predict", "convert", "benchmark", "data", "export", "hub")

EPILOG = """examples:
  segcore list --kind encoders
  segcore train --encoder mscan-t --decoder ham --dataset synthetic-shapes --iters 500
  segcore eval --model runs/demo --dataset synthetic-shapes --split val
  segcore predict --model runs/demo image.jpg --out predictions/
"""


def _available(name: str) -> bool:
    return importlib.util.find_spec(f"segcore_cli.commands.{name}") is not None


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose sub-commands take positionals between options.

    Plain argparse fills every positional from the first run of them, so ``segcore export MODEL --opset 17
    OUT.onnx`` would fail with "unrecognized arguments"; intermixed parsing (``parse_intermixed_args``)
    collects the options first. Parsers with sub-commands of their own keep the plain behaviour, which
    intermixed parsing does not support.
    """

    _intermixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing or any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions):
            return super().parse_known_args(args, namespace)
        self._intermixing = True  # parse_known_intermixed_args calls back into this method
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def error(self, message: str) -> NoReturn:
        """Exit 2 with one line naming the flag and what it accepts (argparse would print the usage first)."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command."""
    parser = _Parser(
        prog="segcore",
        description="segcore: semantic segmentation where any encoder works with any decoder.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"segcore {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if _available(name):
            importlib.import_module(f"segcore_cli.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``segcore`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    debug = args.debug or "--debug" in argv
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("segcore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`segcore list | head`): stop quietly, as a tool killed by SIGPIPE
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python flushes stdout at exit: do not fail again there
        return 141
    except Exception as err:  # noqa: BLE001 - the one place that turns errors into exit codes
        if debug:
            raise
        from segcore.errors import SegcoreError

        user_error = isinstance(err, (SegcoreError, FileNotFoundError, ValueError))
        message = str(err).strip() or type(err).__name__
        if not user_error:
            message = f"{type(err).__name__}: {message}"
        print(f"segcore {args.command}: error: {message}", file=sys.stderr)
        if not user_error:
            print("(run with --debug for the traceback)", file=sys.stderr)
        return int(getattr(err, "exit_code", 2)) if user_error else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
