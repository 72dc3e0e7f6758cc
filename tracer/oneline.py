"""One line and an exit code for every error a command expects, never a traceback, and one way
to end on a signal: shared by `droptrace` and `kubectl-droptrace`, each with its own name at
the start of the line."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import click

from tracer.errors import DroptraceError, OutputClosed

P = ParamSpec("P")
R = TypeVar("R")


def fail(prog: str, message: str, code: int) -> NoReturn:
    click.echo(f"{prog}: {message}", err=True)
    sys.exit(code)


def _silence_stdout() -> None:
    """A closed stdout: what Python still has buffered for it goes nowhere, without the
    'Exception ignored ... BrokenPipeError' it would print at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def sigterm_as_interrupt() -> None:
    """SIGTERM ends the command as Ctrl-C does (its clean-up runs, exit 130)."""

    def handler(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    # A background job of a non-interactive shell starts with SIGINT ignored, and Python
    # then leaves it so: `kill -INT` must still end the command cleanly, like Ctrl-C.
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_click(prog: str, command: click.Command) -> NoReturn:
    """Run a click command with its own usage errors as one line too (click would print its
    usage, a hint and the error over four lines), and a Ctrl-C while parsing as exit 130."""
    try:
        rv = command.main(prog_name=prog, standalone_mode=False)
    except click.ClickException as err:
        fail(prog, err.format_message(), err.exit_code)
    except click.Abort:
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


def one_line_errors(prog: str, kernel: bool) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator mapping DroptraceError to its line and exit code, Ctrl-C to 130, and any
    other exception to an "internal error" line (70; DROPTRACE_DEBUG=1 raises it). With
    `kernel`, refusals from the kernel are one line too: PermissionError 77, OSError 1."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except (OutputClosed, BrokenPipeError):
                _silence_stdout()
                sys.exit(0)
            except DroptraceError as err:
                fail(prog, str(err), err.exit_code)
            except KeyboardInterrupt:
                sys.exit(130)
            except Exception as err:
                if kernel and isinstance(err, PermissionError):
                    fail(
                        prog,
                        f"the kernel refused: {err} (missing CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN?)",
                        77,
                    )
                if kernel and isinstance(err, OSError):
                    fail(prog, str(err), 1)
                if os.environ.get("DROPTRACE_DEBUG"):
                    raise
                fail(
                    prog,
                    f"internal error: {type(err).__name__}: {err} (DROPTRACE_DEBUG=1 shows where)",
                    70,
                )

        return wrapper

    return decorate
