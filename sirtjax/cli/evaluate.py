"""``sirtjax evaluate PRED REF``: compare a segmentation (or warped labels) with a reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import app, progress_bar


@app.command()
def evaluate(
    pred: Annotated[Path, typer.Argument(help="Predicted mask or label map (NIfTI, MHA/NRRD or DICOM folder).")],
    ref: Annotated[Path, typer.Argument(help="Reference mask or label map on the same grid.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")] = False,
    lesions: Annotated[
        bool, typer.Option("--lesions", help="Lesion-wise detection (instance maps, or binary masks split into components).")
    ] = False,
    rmsd: Annotated[
        bool, typer.Option("--rmsd", help="Registration RMSD (thesis 5.3.4) of label maps: liver = 1, landmarks = ids >= 2.")
    ] = False,
) -> None:
    """Per-label DSC, RV, volumes (ml), ASSD, HD, HD95 and MCD (mm) of PRED against REF.

    A label in only one map has distances inf (null in JSON) and says which map is empty.

    With --lesions: one row for all lesions together, then lesion-wise sensitivity/precision.
    """
    from rich.console import Console

    from sirtjax.errors import InputError
    from sirtjax.io import read_volume
    from sirtjax.metrics._inputs import as_labels
    from sirtjax.volume import same_grid

    if rmsd and lesions:
        raise InputError(pred, "--rmsd and --lesions evaluate different maps; choose one")
    p_vol, r_vol = read_volume(pred), read_volume(ref)
    if not same_grid(p_vol, r_vol):
        raise InputError(pred, f"grid differs from the reference {ref}: {_grid_mismatch(p_vol, r_vol)}")
    for path, vol in ((pred, p_vol), (ref, r_vol)):
        try:
            as_labels(vol.array, "image")
        except ValueError as exc:
            raise InputError(path, str(exc).removeprefix("image is ")) from None

    report = _report(pred, ref, p_vol, r_vol, lesions=lesions, rmsd=rmsd, console=Console(stderr=True))
    if as_json:
        typer.echo(json.dumps(report, indent=2, allow_nan=False))
    else:
        _print_tables(report, Console())


def _grid_mismatch(a, b) -> str:
    """Which of shape, spacing, origin and direction differ between two Volumes, with values."""
    import numpy as np

    from sirtjax.volume import describe_grid

    parts = []
    if a.shape != b.shape or not np.allclose(a.spacing_mm, b.spacing_mm, atol=1e-6):
        parts.append(f"{describe_grid(a)} vs {describe_grid(b)}")
    if not np.allclose(a.origin_mm, b.origin_mm, atol=1e-3):
        parts.append(f"origin {_vec(a.origin_mm)} vs {_vec(b.origin_mm)} mm")
    if not np.allclose(a.direction, b.direction, atol=1e-4):
        parts.append("direction matrices differ")
    return "; ".join(parts) or "corner voxels differ by more than 1e-3 mm"


def _report(pred, ref, p_vol, r_vol, *, lesions: bool, rmsd: bool, console) -> dict:
    """The evaluation as a dict of plain JSON values (per-label rows, optional lesions/RMSD)."""
    import numpy as np
    
    from sirtjax.metrics import iter_label_metrics, lesion_detection
    from sirtjax.metrics import rmsd as rmsd_of
    from sirtjax.volume import describe_grid

    report: dict = {"pred": str(pred), "ref": str(ref), "grid": describe_grid(r_vol)}
    if lesions:
        binary = (p_vol.with_array(np.asarray(p_vol.array) != 0), r_vol.with_array(np.asarray(r_vol.array) != 0))
        n, rows = iter_label_metrics(*binary, labels=[1])
    else:
        n, rows = iter_label_metrics(p_vol, r_vol)
    with progress_bar() as progress:
        task = progress.add_task("evaluating labels", total=n)
        report["labels"] = []
        for row in rows:
            report["labels"].append(row.to_json())
            progress.advance(task)
    if lesions:
        report["lesions"] = lesion_detection(p_vol, r_vol).to_json()
    if rmsd:
        report["rmsd"] = rmsd_of(p_vol, r_vol).to_json()
    return report


def _print_tables(report: dict, console) -> None:
    from rich import box
    from rich.table import Table

    title = "all lesions (binary)" if "lesions" in report else f"{report['pred']} vs {report['ref']}"
    table = Table(title=title, caption=f"{report['grid']}; volumes in ml, distances in mm",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("label", "DSC", "RV", "V pred", "V ref", "ASSD", "HD", "HD95", "MCD", "empty"):
        table.add_column(col, justify="left" if col in ("label", "empty") else "right", no_wrap=True)
    for r in report["labels"]:
        table.add_row(
            str(r["label"]), _num(r["dsc"]), _num(r["rv"]), _num(r["volume_pred_ml"], 2), _num(r["volume_ref_ml"], 2),
            _num(r["assd_mm"], 2), _num(r["hd_mm"], 2), _num(r["hd95_mm"], 2), _num(r["mcd_mm"], 2),
            "" if r["empty"] == "none" else r["empty"],
        )
    console.print(table)
    if "lesions" in report:
        d = report["lesions"]
        console.print(
            f"lesions: {d['n_ref']} reference, {d['n_pred']} predicted; TP {d['tp']}, FN {d['fn']}, FP {d['fp']}; "
            f"sensitivity {_rate(d['sensitivity'])}, precision {_rate(d['precision'])}"
        )
    if "rmsd" in report:
        d = report["rmsd"]
        mcds = ", ".join(f"{k}: {_num(v, 2)}" for k, v in d["mcd_mm"].items()) or "none"
        console.print(f"RMSD {_num(d['rmsd_mm'], 2)} mm (liver MSD {_num(d['msd_mm'], 2)} mm; landmark MCD mm {mcds})")
        if d["missing_in_pred"] or d["missing_in_ref"]:
            console.print(f"landmarks left out: missing in pred {d['missing_in_pred']}, missing in ref {d['missing_in_ref']}")


def _num(v: float | None, digits: int = 3) -> str:
    return "inf" if v is None else f"{v:.{digits}f}"


def _rate(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.3f}"


def _vec(v) -> str:
    return "(" + ", ".join(f"{float(x):.4g}" for x in v) + ")"
