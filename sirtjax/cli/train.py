"""``sirtjax train CONFIG``: train a segmentation model from a JSON config (resumes if interrupted)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sirtjax.cli._app import app


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="JSON training config (its keys: the docstring of sirtjax.train.config).")],
    out: Annotated[Optional[Path], typer.Option("-o", "--out", help="Run folder (default runs/<config name>).")] = None,
) -> None:
    """Train a U-Net, or the registration-segmentation network (model arch "regseg"); checkpoints, metrics.jsonl
    the best model (best/) and the last (final/) go to the run folder.

    Re-running the same command after an interruption resumes from the last checkpoint.
    """
    from sirtjax.train import load_config
    from sirtjax.train import train as run_training
    from sirtjax.train.config import is_regseg_config, read_json_config, resolve_init_from

    out = out or Path("runs") / config.stem
    raw = read_json_config(config)
    if is_regseg_config(raw):
        from sirtjax.train.regseg import parse_regseg_config, train_regseg

        result = train_regseg(parse_regseg_config(resolve_init_from(raw, config), str(config)), out, progress=typer.echo)
        typer.echo(f"done: {result['epochs']} epochs, best validation DSC {result['best_val_dice']:.4f}; model in {out / 'best'}")
        return
    cfg = load_config(config)
    result = run_training(cfg, out)
    typer.echo(f"done: {result['step']} steps, best validation DSC {result['best_val_dice']:.4f}; model in {out / 'best'}")
