"""``sirtjax demo OUT``: phantom study -> plan -> verification -> report, with no other arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Overwrite, app, program_cache


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="Output folder (refused if it exists, unless --overwrite): study/, plan/, verification files, report.html.")],
    seed: Annotated[int, typer.Option("--seed", help="Phantom seed (the default, 200, is none of the liver model's training or validation phantoms).")] = 200,
    small: Annotated[bool, typer.Option("--small", help="Coarse 6 mm phantom (seconds; for tests).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Generate a phantom study, plan and verify it (quick registration), and write the HTML report.

    The phantom's true lung shunt fraction stands in for planar scintigraphy; lesions are given on the diagnostic CT
    only. With the default liver model installed, the Dice of the segmented MAA and 90Y CT livers is printed.
    """
    import time

    from sirtjax.cli._uncertainty import (BOUNDARY_SD_MM, CALIBRATION_SD, DEMO_MEMBERS, DEMO_REGISTRATIONS,
                                          LUNG_SHUNT_SD, RESIDUAL, RESIDUAL_SD)
    from sirtjax.cli.plan import progress_bars
    from sirtjax.dosimetry.uncertainty import EnsembleOptions
    from sirtjax.pipelines.demo import run_demo
    from sirtjax.pipelines.inputs import UncertaintyRequest

    start = time.perf_counter()
    options = EnsembleOptions(DEMO_MEMBERS, CALIBRATION_SD, RESIDUAL, RESIDUAL_SD, LUNG_SHUNT_SD, BOUNDARY_SD_MM)
    result = run_demo(out, seed=seed, small=small, overwrite=overwrite, programs=program_cache(), display=progress_bars,
                      uncertainty=UncertaintyRequest(DEMO_MEMBERS, options.stated(), DEMO_REGISTRATIONS))
    for name, score in result.liver_dice.items():
        typer.echo(f"segmented liver on {name}: Dice {score:.3f} against the phantom's truth")
    typer.echo(f"demo finished in {time.perf_counter() - start:.0f} s; "
               f"planned {result.run.plan.planned_activity_gbq:.3f} GBq; report: {result.run.report_html}")
