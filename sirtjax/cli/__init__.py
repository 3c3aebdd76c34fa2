"""The ``sirtjax`` command line: a thin typer layer over the library.

Each command lives in its own module of this package (one module, one command, registered on
:data:`sirtjax.cli._app.app` with ``@app.command()``); modules are discovered here, so adding a
command means adding a module. Errors caused by the user's input
(:class:`~sirtjax.errors.SirtjaxError`, typer's usage errors) print one line naming the file and the
problem and exit with code 2; ``sirtjax --debug CMD ...`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys
import warnings

import typer

from sirtjax.cli._app import app
from sirtjax.errors import SirtjaxError

__all__ = ["app", "main", "run"]

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as the commands print theirs: one line on stderr."""
    typer.echo(f"warning: {message}", err=True)


_METAVARS = {"path": "PATH", "float": "X", "int": "N", "str": "TEXT"}


def plain_metavars(command) -> None:
    """Help that names what to give, not Python types: arguments by their name (IMAGE), options by kind (PATH, X, N,
    TEXT; a repeatable option the same, its help says so); choices keep their list."""
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)
    for param in command.params:
        desc = getattr(param, "type_descriptor", None)
        if param.metavar is not None or desc is None or desc.is_choice:
            continue
        if param.param_type_name == "argument":
            param.metavar = param.name.upper()
            continue
        kind = "path" if desc.is_path else param.bare_type().removeprefix("list[").removesuffix("]").lower()
        param.metavar = _METAVARS.get(kind, param.metavar)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app; input errors become one line on stderr and exit code 2, warnings one line."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            command = typer.main.get_command(app)
            plain_metavars(command)
            code = command.main(args=args, standalone_mode=False, prog_name="sirtjax")
    except SirtjaxError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors (typer >= 0.29 vendors click; click is not a dependency)
        if hasattr(exc, "show"):
            exc.show()
        else:
            typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"error: internal error ({type(exc).__name__}: {exc}); rerun with --debug for the traceback", err=True)
        sys.exit(1)
    if isinstance(code, int) and code:  # typer.Exit(code) inside a command
        sys.exit(code)


def run() -> None:
    """The ``sirtjax`` executable: :func:`main`, then the process ends without the interpreter's teardown.

    Every command has written its outputs whole and closed them before it returns (:mod:`sirtjax.outputs`); the
    teardown would only unload XLA's executables and thread pools, about 0.8 s of every call. Logging and the
    standard streams are flushed first. An exception that escapes :func:`main` (``--debug``) ends the process the
    ordinary way, with its traceback.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:  # sys.exit("message"): printed, exit status 1, as the interpreter does
            print(exc.code, file=sys.stderr)
            code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
