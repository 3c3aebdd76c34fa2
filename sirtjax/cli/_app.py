"""The typer application object, its global options and the compiled programs' cache."""

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


def cache_root() -> Path:
    """sirtjax's cache folder: ``$SIRTJAX_CACHE_DIR``, else ``~/.cache/sirtjax``."""
    return Path(os.environ.get("SIRTJAX_CACHE_DIR", Path.home() / ".cache" / "sirtjax"))


def program_cache():
    """The compiled programs of the registrations and of the segmentation models' forward passes, kept in ``programs``
    under :func:`cache_root` (:class:`~sirtjax.programs.ProgramCache`): a new patient loads them instead
    of compiling."""
    from sirtjax.programs import ProgramCache

    return ProgramCache(cache_root() / "programs")


def _print_version(value: bool) -> None:
    """--version: print the installed version and stop."""
    if value:
        from importlib.metadata import version

        typer.echo(f"sirtjax {version('sirtjax')}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks instead of one-line errors."),
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version),
) -> None:
    """SIRT image analysis in JAX: phantoms, registration, segmentation, dosimetry, planning."""
    del debug, version  # --debug is read by sirtjax.cli.main before the app runs


Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output as a whole (default: refuse it).")]
"""The ``--overwrite`` flag of every command that writes outputs (:mod:`sirtjax.outputs`)."""


class Preset(str, Enum):
    """Registration preset, named as the keys of sirtjax.registration.PRESETS (a test keeps the two equal)."""

    image_based = "image-based"
    cnn_guided = "cnn-guided"
    cnn_lm_guided = "cnn-lm-guided"


class Metric(str, Enum):
    """Image similarity of the registration."""

    mi = "mi"
    ssd = "ssd"


class Modality(str, Enum):
    """Imaging modality of an image to segment, as sirtjax.segmentation.preprocess.MODALITIES."""

    ct = "ct"
    mr = "mr"


class Model(str, Enum):
    """Dose model."""

    vsv = "vsv"
    ldm = "ldm"


class InputKind(str, Enum):
    """What the activity image holds."""

    counts = "counts"
    bq_per_ml = "bq-per-ml"


class ConstantSet(str, Enum):
    """Named 90Y constant sets (sirtjax.dosimetry.constants)."""

    icrp107 = "icrp107"
    thesis = "thesis"
    resin = "resin"
    glass = "glass"


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
