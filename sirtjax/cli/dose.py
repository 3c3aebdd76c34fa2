"""``sirtjax dose ACTIVITY --liver MASK -o DIR``: voxel dose map, DVHs and a report from SPECT or PET."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sirtjax.cli._app import ConstantSet, InputKind, Model, Overwrite, app, program_cache, progress_bar
from sirtjax.cli._uncertainty import (BOUNDARY_SD_MM, CALIBRATION_SD, LUNG_SHUNT_SD, RESIDUAL, RESIDUAL_SD, BoundarySd,
                                      CalibrationSd, LungShuntSd, Members, Residual, ResidualSd)

if TYPE_CHECKING:
    from rich.console import Console

    from sirtjax.dosimetry.dose_files import DoseReport


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


Fwhm = Annotated[float | None, typer.Option("--fwhm-mm", help="Resolution (FWHM, mm) of ACTIVITY: with "
                                           "--match-fwhm-mm, and for the analytic recovery curve.")]
MatchFwhm = Annotated[float | None, typer.Option("--match-fwhm-mm", help="Blur ACTIVITY from --fwhm-mm to this FWHM "
                                                 "first (compare SPECT and PET at one resolution).")]
RecoveryCsv = Annotated[Path | None, typer.Option("--recovery-csv", help="Measured sphere recovery curve (columns "
                                                  "volume_ml, recovery_coefficient): recovery-corrected lesion means. "
                                                  "Without it, --fwhm-mm gives the analytic curve.")]


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
    fwhm_mm: Fwhm = None,
    match_fwhm_mm: MatchFwhm = None,
    recovery_csv: RecoveryCsv = None,
    uncertainty: Members = 0,
    calibration_sd: CalibrationSd = CALIBRATION_SD,
    residual_fraction: Residual = RESIDUAL,
    residual_sd: ResidualSd = RESIDUAL_SD,
    lung_shunt_sd: LungShuntSd = LUNG_SHUNT_SD,
    boundary_sd_mm: BoundarySd = BOUNDARY_SD_MM,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the ensemble's draws.")] = 0,
    overwrite: Overwrite = False,
) -> None:
    """Voxel dose (Gy) on the activity grid with per-VOI mean/min/max, D_x, V_x and cumulative DVHs; the lesions'
    recovery correction and the dose's uncertainty ensemble on request."""
    from rich.console import Console
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    from sirtjax.dosimetry.dose_files import DoseRequest, dose_from_files
    from sirtjax.dosimetry.uncertainty import EnsembleOptions

    request = DoseRequest(
        activity, liver, out, lesions=lesions, lungs=lung, ct=ct, input_kind=input_kind.value,
        activity_gbq=activity_gbq, lung_shunt_fraction=lung_shunt, model=model.value, constants=constants.value,
        liver_density_g_ml=liver_density, dose_levels_pct=parse_levels(dose_levels, "--dx"),
        volume_levels_gy=parse_levels(volume_levels, "--vx"), fwhm_mm=fwhm_mm, match_fwhm_mm=match_fwhm_mm,
        recovery_csv=recovery_csv, seed=seed, overwrite=overwrite, ensemble=EnsembleOptions(
            uncertainty, calibration_sd, residual_fraction, residual_sd, lung_shunt_sd, boundary_sd_mm))
    with progress_bar(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
        task = progress.add_task("")
        result = dose_from_files(request, lambda stage: progress.update(task, description=stage), program_cache())
    print_summary(result, Console())
    Console().print(f"wrote {out}/dose.nii.gz, dvh.csv, dvh.png, report.json"
                    + (", uncertainty.png" if result.uncertainty else ""))


def print_summary(result: DoseReport, console: Console) -> None:
    """Rich table of the per-VOI statistics of a DoseReport, then the lung dose, the lesions' recovery, the
    uncertainty intervals and the warnings."""
    from rich import box
    from rich.table import Table

    dose, c = result.dose, result.dose.constants
    table = Table(title=f"{dose.model.upper()} dose, constants {c.name} ({c.gy_kg_per_gbq:.2f} Gy kg/GBq)",
                  caption="volumes in ml, doses in Gy, V_x in % of the VOI volume", box=box.SIMPLE_HEAD)
    vois = dose.records()
    keys = [k for k in vois[0] if k.startswith(("D", "V"))]
    for col in ["VOI", "ml", "mean", "min", "max"] + [k.split("_")[0] for k in keys]:
        table.add_column(col, justify="left" if col == "VOI" else "right", no_wrap=col == "VOI")
    for v in vois:
        cells = [v["volume_ml"], v["mean_gy"], v["min_gy"], v["max_gy"]] + [v[k] for k in keys]
        table.add_row(v["name"], *(_short(x) for x in cells))
    console.print(table)
    if dose.lung is not None:
        lung = dose.lung
        console.print(f"lung dose {lung.dose_gy:.2f} Gy ({lung.formula}, M_lung {lung.mass_kg:.3f} kg: {lung.mass_source})")
    for r in result.recovery.lesions if result.recovery is not None else ():
        console.print(f"{r.name}: recovery coefficient {r.coefficient:.3f} at {r.volume_ml:.3g} ml, "
                      f"mean {r.mean_gy:.1f} Gy -> {r.corrected_mean_gy:.1f} Gy corrected")
    for v in result.uncertainty or ():
        cells = [f"{k.split('_')[0]} {_short(v[k]['nominal'])} [{_short(v[k]['p5'])}, {_short(v[k]['p95'])}]"
                 for k in ("mean_gy", "D70_gy", "V100_pct")]
        console.print(f"{v['name']}: " + "; ".join(cells) + f" (5-95 %; widest: {v['mean_gy']['dominant'] or '-'})")
    for w in result.warnings:
        typer.echo(f"warning: {w.message}", err=True)


def _short(x: float | None) -> str:
    """A number in at most 5 characters where possible: one decimal below 100, none above."""
    if x is None:
        return "empty"
    return f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"

