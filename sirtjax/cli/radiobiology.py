"""``sirtjax radiobiology DOSE --liver MASK --params P.json -o DIR``: BED map, BED DVHs, EUD, NTCP and TCP per VOI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Overwrite, app


@app.command()
def radiobiology(
    dose: Annotated[Path, typer.Argument(help="Dose map in Gy (dose.nii.gz of `sirtjax dose`, `plan` or `verify`).")],
    liver: Annotated[Path, typer.Option("--liver", help="Liver mask (non-zero = liver), any grid.")],
    params: Annotated[Path, typer.Option("--params", help="JSON tissue models: normal_liver and/or lesion, each with "
                                         "alpha_beta_gy, repair_half_time_h, source [, alpha_per_gy, clonogens_per_ml, lkb].")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: bed.nii.gz, bed_dvh.csv, report.json.")],
    lesions: Annotated[Path | None, typer.Option("--lesions", help="Lesion label map (0, 1..n instances), any grid.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Biologically effective dose of the permanent 90Y implant per voxel, and per VOI its mean BED and EQD2,
    EUD, LKB NTCP and Poisson TCP (sirtjax.dosimetry.radiobiology). Masks on another grid are resampled
    (nearest neighbour) onto the dose grid. Every tissue parameter comes from --params with its source."""
    from rich.console import Console
    from rich.table import Table

    from sirtjax.dosimetry.radiobiology_files import radiobiology_from_files

    result = radiobiology_from_files(dose=dose, liver=liver, params=params, out=out, lesions=lesions, overwrite=overwrite)
    table = Table(title="Radiobiology of the permanent 90Y implant (Gy)")
    for col in ("VOI", "ml", "mean dose", "mean BED", "mean EQD2", "EUD (BED)", "NTCP", "TCP"):
        table.add_column(col, justify="left" if col == "VOI" else "right")
    for v in result.vois:
        table.add_row(v.name, *(("-" if x is None else f"{x:.3g}") for x in
                                (v.volume_ml, v.mean_dose_gy, v.mean_bed_gy, v.mean_eqd2_gy, v.eud_bed_gy, v.ntcp, v.tcp)))
    Console().print(table)
    if result.unmodelled:
        typer.echo(f"no tissue model for: {', '.join(result.unmodelled)}", err=True)
    if result.empty:
        typer.echo(f"no voxel on the dose grid: {', '.join(result.empty)}", err=True)
    typer.echo(f"wrote {out}/bed.nii.gz, bed_dvh.csv, report.json")
