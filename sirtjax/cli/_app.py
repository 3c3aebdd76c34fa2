"""The typer application object, its global options and the persistent compilation cache."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="sirtjax",
    help="SIRT image analysis in JAX: phantoms, registration, segmentation, dosimetry, planning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no box drawing, no "<bool>" after flags, no blank first line
)


def enable_compilation_cache() -> None:
    """Point JAX's persistent compilation cache at ~/.cache/sirtjax/jax (or $SIRTJAX_CACHE_DIR).

    Every program is kept, however quick to compile: a registration runs ~100 small ones, and
    compiling those again cost ~2 s per call. The registration steps' traced programs are kept in
    the same folder (:mod:`sirtjax.registration.step_cache`).
    """
    import jax

    cache = Path(os.environ.get("SIRTJAX_CACHE_DIR", Path.home() / ".cache" / "sirtjax" / "jax"))
    cache.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
) -> None:
    """SIRT image analysis in JAX: phantoms, registration, segmentation, dosimetry, planning."""
    del debug  # read by sirtjax.cli.main before the app runs
    enable_compilation_cache()


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output as a whole (default: refuse it).")]
"""The ``--overwrite`` flag of every command that writes outputs (:mod:`sirtjax.outputs`)."""


class Method(str, Enum):
    """Prescription method, named as in sirtjax.pipelines.inputs.PRESCRIPTION_METHODS and the reports."""

    partition = "partition"
    mono = "mono-compartment"
    bsa = "bsa"


def progress_bar(*columns, **kwargs):
    """A transient rich Progress on stderr, shown only on a terminal (piped, it printed a blank line)."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal, **kwargs)
