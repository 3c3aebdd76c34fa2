"""``sirtjax demo OUT``: phantom study -> plan -> verification -> report, with no other arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Overwrite, app, program_cache

DEMO_MASKS = {
    "maa_ct": ("liver", "lungs", "labels"),
    "diag_ct": ("liver", "lesions", "labels"),
    "y90_ct": ("liver", "labels"),
}
"""Masks the demo's manifest gives: livers and landmark label maps of every CT, lesions on the diagnostic
CT only (mapped onto the MAA and 90Y CTs by registration), lungs on the MAA CT."""


def demo_masks(segment: bool) -> dict:
    """DEMO_MASKS, without the MAA and 90Y CT livers when they are to be segmented by the liver model."""
    if not segment:
        return DEMO_MASKS
    return {s: tuple(k for k in kinds if not (k == "liver" and s != "diag_ct")) for s, kinds in DEMO_MASKS.items()}


def clinical_manifest(manifest: dict, masks: dict = DEMO_MASKS) -> dict:
    """A phantom manifest restricted to the given masks (series -> kinds), as a clinic would have them."""
    out = dict(manifest)
    out["masks"] = {series: {k: manifest["masks"][series][k] for k in kinds} for series, kinds in masks.items()}
    return out


@app.command()
def demo(
    out: Annotated[Path, typer.Argument(help="Output folder (refused if it exists, unless --overwrite): study/, plan/, verification files, report.html.")],
    seed: Annotated[int, typer.Option("--seed", help="Phantom seed (the default, 200, is none of the liver model's training or validation phantoms).")] = 200,
    small: Annotated[bool, typer.Option("--small", help="Coarse 6 mm phantom (seconds; for tests).")] = False,
    overwrite: Overwrite = False,
) -> None:
    """Generate a phantom study, plan and verify it (quick registration), and write the HTML report.

    The phantom has no planar scintigraphy: its true lung shunt fraction stands in for the planar
    LSF (the ``lung_shunt_fraction`` of the demo's study.json). Lesions are given on the diagnostic
    CT only and reach the MAA and 90Y CTs by registration.
    When the default liver model is installed, the MAA and 90Y CT livers are segmented with it and
    their Dice against the phantom's truth is printed.
    """
    import tempfile
    import time

    from sirtjax.cli.plan import progress_bars
    from sirtjax.errors import InputError
    from sirtjax.phantom import PhantomConfig, generate_study, write_study
    from sirtjax.metrics import dice
    from sirtjax.outputs import check_output, write_json
    from sirtjax.cli._uncertainty import (BOUNDARY_SD_MM, CALIBRATION_SD, DEMO_MEMBERS, DEMO_REGISTRATIONS,
                                          LUNG_SHUNT_SD, RESIDUAL, RESIDUAL_SD, stated_model)
    from sirtjax.pipelines.inputs import UncertaintyRequest
    from sirtjax.pipelines.run import run_study
    from sirtjax.pipelines.segment import model_available, workflow_options
    from sirtjax.io.study import parse_manifest

    if seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {seed}")
    check_output(out, overwrite=overwrite)
    start = time.perf_counter()
    bar, say, progress = progress_bars()
    with bar, tempfile.TemporaryDirectory() as scratch:
        say("generating the phantom study")
        phantom = generate_study(seed, PhantomConfig.small() if small else PhantomConfig(), progress=say)
        segment = model_available()
        # The phantom has no planar scintigraphy: its true LSF stands in for the planar value.
        manifest = {**clinical_manifest(phantom.manifest, demo_masks(segment)),
                    "lung_shunt_fraction": phantom.truth["lung_shunt_fraction"]["maa"]}
        study_dir = write_study(phantom, Path(scratch) / "study")
        write_json(manifest, study_dir / "study.json", sort_keys=True)
        study = parse_manifest(manifest, study_dir / "study.json")

        stated = stated_model(DEMO_MEMBERS, CALIBRATION_SD, RESIDUAL, RESIDUAL_SD, LUNG_SHUNT_SD, BOUNDARY_SD_MM)
        options = workflow_options(quick=True, liver_model="liver" if segment else None, lesion_model="none",
                                   programs=program_cache(), uncertainty=UncertaintyRequest(DEMO_MEMBERS, stated, DEMO_REGISTRATIONS))
        result = run_study(study, out, overwrite=overwrite, verify_too=True, options=options, seed=0, say=say, progress=progress,
                           copy_study=True,
                           subtitle=f"Demo on phantom seed {seed}: lesions from the diagnostic CT mapped by registration; "
                                    "the true LSF stands in for planar scintigraphy")
    if segment:
        for session, name in ((result.plan, "maa_ct"), (result.verification, "y90_ct")):
            score = dice(session.vois.liver, phantom.images[f"{name}_liver"])
            typer.echo(f"segmented liver on {name}: Dice {score:.3f} against the phantom's truth")
    typer.echo(f"demo finished in {time.perf_counter() - start:.0f} s; planned {result.plan.planned_activity_gbq:.3f} GBq; "
               f"report: {result.report_html}")
