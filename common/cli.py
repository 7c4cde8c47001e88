"""Argument parsing shared by the CLIs: one-line errors and typed comma lists.

Imports only the standard library (and common.errors), so a CLI can install its Ctrl-C handling
before it imports torch.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, NoReturn

from common.errors import UserError, describe_os_error

INTERRUPTED_EXIT = 130  # 128 + SIGINT, what shells report for Ctrl-C


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (no usage block) and exits with 2.

    A value that starts with a minus and a digit (`--latency -1:3`, `--seed -5`) is read as a value, so
    its own check says what is wrong with it (plain argparse takes it for an unknown flag). The parsed
    namespace's `given` holds the destinations of the flags the command line names explicitly (a mode
    refuses a flag of another mode only when it was given)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d")

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001,ANN201  (argparse's signature)
        parsed = super().parse_args(args, namespace)
        parsed.given = self.given_flags(sys.argv[1:] if args is None else list(args))
        return parsed

    def given_flags(self, args: list[str]) -> frozenset[str]:
        """Destinations of the optional flags `args` names (abbreviations and --flag=value included)."""
        defaults = {action: action.default for action in self._actions}
        try:
            for action in self._actions:
                action.default = argparse.SUPPRESS
            found, _ = super().parse_known_args(args)
        finally:
            for action, default in defaults.items():
                action.default = default
        return frozenset(vars(found))


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help unless the default is None or False."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        silent = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if not silent and "default" not in text:
            text += " (default: %(default)s)"
        return text


def comma_list(text: str) -> list[str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def _int_at_least(minimum: int, kind: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "positive")
non_negative_int = _int_at_least(0, "non-negative")


def int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(v != v or v in (float("inf"), float("-inf")) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def _interrupted_message(prog: str) -> str:
    return f"{prog}: interrupted; run the same command again to resume"


def exit_quietly_on_interrupt(prog: str | None = None) -> None:
    """Until run_main starts, Ctrl-C prints one line and exits with 130 (no traceback out of the
    imports). Call it first thing in a CLI script, before heavy imports."""
    name = prog or Path(sys.argv[0]).name

    def stop(_signal: int, _frame) -> None:
        print(_interrupted_message(name), file=sys.stderr, flush=True)
        os._exit(INTERRUPTED_EXIT)  # nothing was written yet: leave at once, wherever the import was

    signal.signal(signal.SIGINT, stop)


def _number_where(allowed: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    """An argparse type: a number for which `allowed` holds (NaN never does), else a one-line error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not allowed(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


INFINITY = float("inf")
fraction = _number_where(lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")  # e.g. an accuracy target
imbalance_ratio = _number_where(lambda v: 1.0 <= v < INFINITY, "one finite number >= 1")
positive_float = _number_where(lambda v: 0.0 < v < INFINITY, "a positive number")
non_negative_float = _number_where(lambda v: 0.0 <= v < INFINITY, "a number >= 0")


def raise_interrupt(_signal: int = signal.SIGINT, _frame=None) -> NoReturn:
    """A signal handler: SIGINT and SIGTERM both become KeyboardInterrupt, so cleanups run either way."""
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (call it again after a library
    such as Ray installed its own SIGTERM handler)."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, raise_interrupt)
    signal.signal(signal.SIGTERM, raise_interrupt)


def _exit_interrupted() -> NoReturn:
    """Exit with 130; if a library left non-daemon threads behind (Flower's simulation workers waiting on
    a stopped Ray), leave without waiting for them: the run stopped writing before this point."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED_EXIT)
    sys.exit(INTERRUPTED_EXIT)


def run_main(main: Callable[[argparse.Namespace], None], parser: argparse.ArgumentParser) -> None:
    """Parse the flags and run `main`; a UserError or a file-system error becomes one stderr line and
    exit code 2, Ctrl-C or SIGTERM one line and exit code 130."""
    interrupt_on_signals()  # from here on: KeyboardInterrupt, cleanups run
    try:
        arguments = parser.parse_args()
        main(arguments)
    except UserError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # a read-only or full --out, a path that is a file: one line, not a traceback
        print(f"{parser.prog}: error: {describe_os_error(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(_interrupted_message(parser.prog), file=sys.stderr)
        _exit_interrupted()
