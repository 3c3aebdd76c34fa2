"""``sirtjax dose ACTIVITY --liver MASK -o DIR``: voxel dose map, DVHs and a report from SPECT or PET."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import ConstantSet, InputKind, Model, Overwrite, app, progress_bar
from sirtjax.cli._uncertainty import (BOUNDARY_SD_MM, CALIBRATION_SD, LUNG_SHUNT_SD, RESIDUAL, RESIDUAL_SD, BoundarySd,
                                      CalibrationSd, LungShuntSd, Members, Residual, ResidualSd, stated_model)


def parse_levels(text: str, option: str) -> tuple[float, ...]:
    """Comma-separated numbers of an option ("70,50") as floats; InputError naming the option."""
    from sirtjax.errors import InputError

    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(option, f"expected comma-separated numbers, got '{text}'") from None
    if not values:
        raise InputError(option, "give at least one number")
    return values


@app.command()
def dose(
    activity: Annotated[Path, typer.Argument(help="SPECT counts (--input counts) or 90Y PET in Bq/ml (--input bq-per-ml).")],
    liver: Annotated[Path, typer.Option("--liver", help="Liver mask (non-zero = liver), any grid.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: dose.nii.gz, dvh.csv, dvh.png, report.json.")],
    lesions: Annotated[Path | None, typer.Option("--lesions", help="Lesion label map (0, 1..n instances).")] = None,
    lung: Annotated[Path | None, typer.Option("--lung", help="Lung mask: LSF from counts (if --lung-shunt is absent) and lung mass.")] = None,
    ct: Annotated[Path | None, typer.Option("--ct", help="CT (HU) for density scaling, resampled onto the activity grid.")] = None,
    activity_gbq: Annotated[float | None, typer.Option("--activity-gbq", help="Administered activity (GBq); required with counts.")] = None,
    lung_shunt: Annotated[float | None, typer.Option("--lung-shunt", help="Lung shunt fraction in [0, 1).")] = None,
    model: Annotated[Model, typer.Option("--model", help="vsv: voxel S-value convolution; ldm: local deposition.")] = Model.vsv,
    constants: Annotated[ConstantSet, typer.Option("--constants", help="Named 90Y constant set (reported).")] = ConstantSet.icrp107,
    input_kind: Annotated[InputKind, typer.Option("--input", help="What ACTIVITY holds.")] = InputKind.counts,
    liver_density: Annotated[float, typer.Option("--liver-density", help="Liver density (g/ml) for LDM without CT.")] = 1.03,
    dose_levels: Annotated[str, typer.Option("--dx", help="D_x levels, % of VOI volume.")] = "70,50",
    volume_levels: Annotated[str, typer.Option("--vx", help="V_x levels in Gy.")] = "70,100,120",
    fwhm_mm: Annotated[float | None, typer.Option("--fwhm-mm", help="Resolution (FWHM, mm) of ACTIVITY: with "
                                                  "--match-fwhm-mm, and for the analytic recovery curve.")] = None,
    match_fwhm_mm: Annotated[float | None, typer.Option("--match-fwhm-mm", help="Blur ACTIVITY from --fwhm-mm to this "
                                                        "FWHM first (compare SPECT and PET at one resolution).")] = None,
    recovery_csv: Annotated[Path | None, typer.Option("--recovery-csv", help="Measured sphere recovery curve (columns "
                                                      "volume_ml, recovery_coefficient): recovery-corrected lesion "
                                                      "means. Without it, --fwhm-mm gives the analytic curve.")] = None,
    uncertainty: Members = 0,
    calibration_sd: CalibrationSd = CALIBRATION_SD,
    residual_fraction: Residual = RESIDUAL,
    residual_sd: ResidualSd = RESIDUAL_SD,
    lung_shunt_sd: LungShuntSd = LUNG_SHUNT_SD,
    boundary_sd_mm: BoundarySd = BOUNDARY_SD_MM,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the ensemble's draws.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Voxel dose (Gy) on the activity grid with per-VOI mean/min/max, D_x, V_x and cumulative DVHs.

    Masks on another grid are resampled (nearest neighbour) onto the activity grid and the report
    says so. SPECT counts inside the liver are scaled to (1 - LSF) x the administered activity.
    With --recovery-csv or --fwhm-mm, every lesion's mean dose is also given divided by the
    recovery coefficient at its volume (sirtjax.dosimetry.recovery). --uncertainty N (SPECT counts)
    draws N plausible calibrations, residuals, lung shunts and VOI outlines from the stated sds
    (sirtjax.dosimetry.uncertainty); every sd is an assumption you state, and the report records it.
    """
    import dataclasses

    from rich.console import Console
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from sirtjax.dosimetry.outputs import write_dose_outputs
    from sirtjax.cli._quantification import checked_recovery_curve
    from sirtjax.dosimetry.recovery import match_resolution
    from sirtjax.dosimetry.voxel import DoseInputError, voxel_dosimetry
    from sirtjax.errors import InputError
    from sirtjax.io import read_ct, read_volume
    from sirtjax.outputs import check_output, output_dir

    inputs = [p for p in (activity, liver, lesions, lung, ct, recovery_csv) if p is not None]
    check_output(out, overwrite=overwrite, inputs=inputs)
    curve = checked_recovery_curve({"--fwhm-mm": fwhm_mm}, match_fwhm_mm, recovery_csv)
    stated = stated_model(uncertainty, calibration_sd, residual_fraction, residual_sd, lung_shunt_sd, boundary_sd_mm)
    if stated is not None and (input_kind != InputKind.counts or ct is not None):
        raise InputError("--uncertainty", "is for SPECT counts without --ct (the PET's and the density map's "
                                          "uncertainties are not modelled)")
    if seed < 0:
        raise InputError("--seed", f"must be a non-negative integer, got {seed}")
    dx = parse_levels(dose_levels, "--dx")
    if any(not 0.0 <= x <= 100.0 for x in dx):
        raise InputError("--dx", f"D_x levels are percentages in [0, 100], got {dose_levels}")
    vx = parse_levels(volume_levels, "--vx")
    sources = {"activity": activity, "liver": liver, "lesions": lesions, "lungs": lung, "ct": ct,
               "activity_gbq": "--activity-gbq", "lung_shunt_fraction": "--lung-shunt", "constants": "--constants",
               "liver_density_g_ml": "--liver-density"}
    with progress_bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
        task = progress.add_task("reading images", total=3)
        images = {name: read_volume(path) for name, path in
                  (("activity", activity), ("liver", liver), ("lesions", lesions), ("lungs", lung)) if path is not None}
        if ct is not None:
            images["ct"] = read_ct(ct)
        if match_fwhm_mm is not None:
            images["activity"] = match_resolution(images["activity"], fwhm_mm, match_fwhm_mm)
        progress.update(task, advance=1, description=f"computing {model.value.upper()} dose")
        try:
            result = voxel_dosimetry(
                images["activity"], images["liver"], lesions=images.get("lesions"), lungs=images.get("lungs"),
                ct=images.get("ct"), input_kind=input_kind.value, activity_gbq=activity_gbq,
                lung_shunt_fraction=lung_shunt, model=model.value, constants=constants.value,
                liver_density_g_ml=liver_density, dose_levels_pct=dx, volume_levels_gy=vx,
            )
        except DoseInputError as exc:
            raise InputError(sources.get(exc.input_name, exc.input_name), str(exc)) from None
        result = _with_resolution(result, fwhm_mm, match_fwhm_mm, curve)
        summary = None
        if stated is not None:
            progress.update(task, description=f"uncertainty ensemble of {uncertainty}")
            summary = _ensemble_summary(images, result, stated, uncertainty, seed, model.value, constants.value,
                                        liver_density)
            result = dataclasses.replace(result, report={**result.report, "uncertainty": {
                "members": uncertainty, "seed": seed, "stated": stated, "vois": summary}})
        progress.update(task, advance=1, description="writing outputs")
        with output_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
            write_dose_outputs(result, tmp)
            if summary is not None:
                from sirtjax.report.uncertainty import tornado_png

                (tmp / "uncertainty.png").write_bytes(tornado_png(summary))
        progress.update(task, advance=1)
    print_summary(result.report, Console())
    Console().print(f"wrote {out}/dose.nii.gz, dvh.csv, dvh.png, report.json" + (", uncertainty.png" if summary else ""))


def _ensemble_summary(images, result, stated, n: int, seed: int, dose_model: str, constants: str,
                      liver_density_g_ml: float) -> list[dict]:
    """The ensemble's summary (sirtjax.dosimetry.uncertainty); the masks' outlines move on their own grids."""
    import jax

    from sirtjax.dosimetry.uncertainty import ensemble, summarise

    e = ensemble(images["activity"], images["liver"], images.get("lesions"), activity_gbq=result.administered_gbq,
                 lung_shunt_fraction=result.lung_shunt_fraction, model=stated, key=jax.random.key(seed), n=n,
                 dose_model=dose_model, constants=constants, liver_density_g_ml=liver_density_g_ml)
    return summarise(e)


def _with_resolution(result, fwhm_mm: float | None, match_fwhm_mm: float | None, curve):
    """result with the resolution matching and the lesions' recovery correction in its report."""
    import dataclasses

    from sirtjax.dosimetry.recovery import recovery_report

    report, warnings = dict(result.report), result.warnings
    if match_fwhm_mm is not None:
        report["resolution"] = {"fwhm_mm": fwhm_mm, "matched_to_fwhm_mm": match_fwhm_mm}
    if curve is not None:
        report["recovery"], outside = recovery_report(report["vois"], curve)
        warnings += outside
        report["warnings"] = [*report["warnings"], *(w.to_dict() for w in outside)]
    return dataclasses.replace(result, report=report, warnings=warnings)


def print_summary(report: dict, console) -> None:
    """Rich table of the per-VOI statistics, then the lung dose and the warnings."""
    from rich import box
    from rich.table import Table

    c = report["constants"]
    table = Table(title=f"{report['model'].upper()} dose, constants {c['name']} ({c['gy_kg_per_gbq']:.2f} Gy kg/GBq)",
                  caption="volumes in ml, doses in Gy, V_x in % of the VOI volume", box=box.SIMPLE_HEAD)
    vois = report["vois"]
    keys = [k for k in vois[0] if k.startswith(("D", "V"))]
    for col in ["VOI", "ml", "mean", "min", "max"] + [k.split("_")[0] for k in keys]:
        table.add_column(col, justify="left" if col == "VOI" else "right", no_wrap=col == "VOI")
    for v in vois:
        cells = [v["volume_ml"], v["mean_gy"], v["min_gy"], v["max_gy"]] + [v[k] for k in keys]
        table.add_row(v["name"], *(_short(x) for x in cells))
    console.print(table)
    if report.get("lung"):
        lung = report["lung"]
        console.print(f"lung dose {lung['dose_gy']:.2f} Gy ({lung['formula']}, M_lung {lung['mass_kg']:.3f} kg: {lung['mass_source']})")
    for r in report.get("recovery", {}).get("lesions", []):
        console.print(f"{r.name}: recovery coefficient {r.coefficient:.3f} at {r.volume_ml:.3g} ml, "
                      f"mean {r.mean_gy:.1f} Gy -> {r.corrected_mean_gy:.1f} Gy corrected")
    for v in report.get("uncertainty", {}).get("vois", []):
        cells = [f"{k.split('_')[0]} {_short(v[k]['nominal'])} [{_short(v[k]['p5'])}, {_short(v[k]['p95'])}]"
                 for k in ("mean_gy", "D70_gy", "V100_pct")]
        console.print(f"{v['name']}: " + "; ".join(cells) + f" (5-95 %; widest: {v['mean_gy']['dominant'] or '-'})")
    for w in report["warnings"]:
        typer.echo(f"warning: {w['message']}", err=True)


def _short(x: float | None) -> str:
    """A number in at most 5 characters where possible: one decimal below 100, none above."""
    if x is None:
        return "empty"
    return f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"

