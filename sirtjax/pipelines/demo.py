"""``sirtjax demo`` as one library call: a phantom study planned and verified with the quick registration
(docs/demo.md).

The phantom has no planar scintigraphy: its true lung shunt fraction stands in for the planar LSF (the
``lung_shunt_fraction`` of the demo's study.json). Lesions are given on the diagnostic CT only and reach the MAA and
90Y CTs by registration. When the default liver model is installed, it segments the MAA and 90Y CT livers and the
result holds their Dice against the phantom's truth.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from sirtjax.errors import InputError
from sirtjax.pipelines.inputs import UncertaintyRequest
from sirtjax.pipelines.request import Display, shown
from sirtjax.pipelines.run import RunResult, run_study
from sirtjax.pipelines.segment import model_available, workflow_options

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


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """The demo's run, and the Dice of each segmented CT liver (series name -> Dice) against the phantom's truth ({}:
    the livers were given)."""

    run: RunResult
    liver_dice: dict[str, float]


def run_demo(out: Path, *, seed: int = 200, small: bool = False, overwrite: bool = False,
             uncertainty: UncertaintyRequest | None = None, programs=None,
             display: Display | None = None) -> DemoResult:
    """Generate the phantom of ``seed`` (``small``: 6 mm), plan and verify it into out with the quick registration."""
    from sirtjax.io.study import parse_manifest
    from sirtjax.metrics import dice
    from sirtjax.outputs import check_output, write_json
    from sirtjax.phantom import PhantomConfig, generate_study, write_study

    if seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {seed}")
    check_output(out, overwrite=overwrite)
    bar, say, progress = shown(display)
    with bar, tempfile.TemporaryDirectory() as scratch:
        say("generating the phantom study")
        phantom = generate_study(seed, PhantomConfig.small() if small else PhantomConfig(), progress=say)
        segment = model_available()
        manifest = {**clinical_manifest(phantom.manifest, demo_masks(segment)),
                    "lung_shunt_fraction": phantom.truth["lung_shunt_fraction"]["maa"]}
        study_dir = write_study(phantom, Path(scratch) / "study")
        write_json(manifest, study_dir / "study.json", sort_keys=True)
        study = parse_manifest(manifest, study_dir / "study.json")
        options = workflow_options(quick=True, liver_model="liver" if segment else None, lesion_model="none",
                                   programs=programs, uncertainty=uncertainty)
        result = run_study(study, out, overwrite=overwrite, verify_too=True, options=options, seed=0, say=say,
                           progress=progress, copy_study=True,
                           subtitle=f"Demo on phantom seed {seed}: lesions from the diagnostic CT mapped by "
                                    "registration; the true LSF stands in for planar scintigraphy")
    sessions = ((result.plan, "maa_ct"), (result.verification, "y90_ct")) if segment else ()
    truth = phantom.images
    return DemoResult(result, {name: float(dice(s.vois.liver, truth[f"{name}_liver"])) for s, name in sessions})
