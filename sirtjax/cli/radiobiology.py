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

    from sirtjax.dosimetry.bed_map import dose_radiobiology, load_tissue_models, radiobiology_report
    from sirtjax.dosimetry.masks import liver_compartments
    from sirtjax.dosimetry.outputs import write_dvh_csv
    from sirtjax.errors import InputError
    from sirtjax.io import read_volume, write_volume
    from sirtjax.outputs import check_output, output_dir, write_json
    from sirtjax.preprocess import labels_on_grid

    inputs = [p for p in (dose, liver, lesions, params) if p is not None]
    check_output(out, overwrite=overwrite, inputs=inputs)
    models = load_tissue_models(params)
    dose_vol = read_volume(dose)
    masks = {}
    for name, path in (("liver", liver), ("lesions", lesions)):
        if path is not None:
            try:
                masks[name] = labels_on_grid(read_volume(path), dose_vol, name, "dose")[0]
            except ValueError as exc:
                raise InputError(path, str(exc)) from None
    labels, names = liver_compartments(masks["liver"], masks.get("lesions"))
    try:
        result = dose_radiobiology(dose_vol, labels, tuple(names), models)
    except ValueError as exc:  # every compartment lacks a model or a voxel: the parameters and the masks together
        raise InputError(f"{params} with {liver}", str(exc)) from None
    report = {"dose": str(dose), **radiobiology_report(result, models)}
    with output_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        write_volume(result.bed, tmp / "bed.nii.gz")
        write_dvh_csv(result.bed_statistics, [v.name for v in result.vois], tmp / "bed_dvh.csv", quantity="bed_gy")
        write_json(report, tmp / "report.json")
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
