"""``sirtjax verify STUDY -o DIR``: the verification workflow (90Y PET) compared with the plan of the same study."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import app
from sirtjax.cli.plan import (Constants, DoseModel, LiverModel, LungShunt, Method, Model, Prescribe, Quick, Seed,
                              run_command)


@app.command()
def verify(
    study: Annotated[Path, typer.Argument(help="Study folder with study.json, or the manifest file.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder (replaced atomically).")],
    lung_shunt: LungShunt = None,
    model: DoseModel = Model.vsv,
    constants: Constants = "icrp107",
    method: Prescribe = Method.partition,
    quick: Quick = False,
    seed: Seed = 0,
    liver_model: LiverModel = "liver",
) -> None:
    """Verify a SIRT treatment: dose from the 90Y PET per VOI and its differences from the plan.

    Runs the plan first (written to OUT/plan/), then the verification into OUT; OUT/report.html
    covers both.
    """
    result = run_command(study, out, verify_too=True, lung_shunt=lung_shunt, model=model.value, constants=constants,
                         method=method.value, quick=quick, seed=seed, liver_model=liver_model)
    liver = next(r for r in result.verification.comparison if r["name"] == "liver")["mean_gy"]
    typer.echo(f"liver mean dose: plan {liver['plan']:.1f} Gy, verification {liver['verification']:.1f} Gy; "
               f"report: {result.report_html}")
