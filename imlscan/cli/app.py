"""The Typer application, its global options and the error policy shared by every command.

Policy: a user error (``ImlscanError``) prints one line to stderr and exits with its code
(1 by default, 2 for usage); an unexpected exception prints one line too and exits 1, unless
``--debug`` (or ``IMLSCAN_DEBUG=1``) asks for the traceback. Human output goes to stderr
(rich), machine output (JSON) to stdout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

import typer
from rich.console import Console
from typer.core import TyperGroup

from imlscan._version import __version__
from imlscan.errors import ImlscanError, UsageError
from imlscan.safetext import dumps_json, shown

err_console = Console(stderr=True, highlight=False)
state = {"debug": os.environ.get("IMLSCAN_DEBUG", "") not in ("", "0")}


def print_error(message: str, hint: str | None = None) -> None:
    from rich.markup import escape  # messages quote user text: "[...]" must print as is

    err_console.print(f"[bold red]error:[/] {escape(shown(message))}", markup=True, soft_wrap=True)
    if hint:
        err_console.print(f"[dim]hint: {escape(shown(hint))}[/]", soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, ``timeout``, ``kill``), raised where Ctrl-C would be, so the
    same clean-up runs (results written for what was done); the CLI then exits 143."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM raises ``Terminated`` instead of ending the process on the
    spot; a second SIGTERM during the clean-up is ignored (SIGKILL still ends it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Typer >= 0.22 vendors click; find its exception base whichever click it uses.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_PASS_THROUGH = (typer.Exit, typer.Abort, _CLICK_EXCEPTION)


class ErrorHandlingGroup(TyperGroup):
    """Turns exceptions from any subcommand into one clear line and an exit code."""

    def invoke(self, ctx):
        try:
            with sigterm_as_interrupt():  # every command: SIGTERM cleans up as Ctrl-C does, exit 143
                return super().invoke(ctx)
        except _PASS_THROUGH:
            raise
        except ImlscanError as e:
            if state["debug"]:
                raise
            print_error(e.message, e.hint)
            raise typer.Exit(e.exit_code) from None
        except BrokenPipeError:  # e.g. `imlscan ... | head`: the reader left, nothing to say
            raise typer.Exit(141) from None
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated)
            print_error("terminated" if terminated else "interrupted")
            raise typer.Exit(143 if terminated else 130) from None
        except Exception as e:  # noqa: BLE001 - the one place that catches everything
            if state["debug"]:
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print_error(
                f"unexpected {type(e).__name__}{': ' + msg if msg else ''}",
                "run with --debug for the traceback, and please report it",
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    name="imlscan",
    cls=ErrorHandlingGroup,
    help=(
        "Show where a photo was manipulated (SparseViT image-manipulation localization).\n\n"
        "Example: imlscan scan photo.jpg --overlay"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imlscan {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """imlscan: localize manipulated regions in photos."""
    if debug:
        state["debug"] = True


def not_built(command: str, issue: int) -> None:
    """Exit 2 with one line for a command whose implementation has not landed yet."""
    raise UsageError(f"'imlscan {command}' is not built yet (tracked in issue #{issue})")


def die_usage(message: str) -> None:
    raise UsageError(message)


def stdout_json(obj) -> None:
    """Machine-readable output on stdout, one strict JSON document (a NaN or infinity is an
    error naming where it sits, never a bare ``NaN`` that strict parsers refuse)."""
    sys.stdout.write(dumps_json(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
