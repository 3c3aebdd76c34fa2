"""``sirtjax demo OUT``: the end-to-end demonstration (for now: the default phantom study)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import app


@app.command()
def demo(out: Annotated[Path, typer.Argument(help="Output folder.")]) -> None:
    """Generate the default phantom study (seed 0) into OUT with its montage, and say where it is."""
    from sirtjax.cli.phantom import write_phantom_folder

    write_phantom_folder(out, seed=0, small=False)
    typer.echo(f"demo study written to {out}; look at {out / 'montage.png'}")
