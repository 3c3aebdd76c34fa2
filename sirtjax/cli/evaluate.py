"""``sirtjax evaluate PRED REF``: compare a segmentation (or warped labels) with a reference."""

from __future__ import annotations

import json
import math
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

    from sirtjax.metrics.evaluation import evaluate_files

    with progress_bar() as progress:
        task = progress.add_task("evaluating labels", total=None)
        result = evaluate_files(pred, ref, lesions=lesions, registration=rmsd,
                                on_start=lambda n: progress.update(task, total=n), on_label=lambda: progress.advance(task))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
    else:
        _print_tables(result, Console())


def _print_tables(result, console) -> None:
    """The per-label table, then the lesion detection or the RMSD (an Evaluation)."""
    from rich import box
    from rich.table import Table

    title = "all lesions (binary)" if result.lesions is not None else f"{result.pred} vs {result.ref}"
    table = Table(title=title, caption=f"{result.grid}; volumes in ml, distances in mm",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("label", "DSC", "RV", "V pred", "V ref", "ASSD", "HD", "HD95", "MCD", "empty"):
        table.add_column(col, justify="left" if col in ("label", "empty") else "right", no_wrap=True)
    for r in result.labels:
        table.add_row(
            str(r.label), _num(r.dsc), _num(r.rv), _num(r.volume_pred_ml, 2), _num(r.volume_ref_ml, 2),
            _num(r.assd_mm, 2), _num(r.hd_mm, 2), _num(r.hd95_mm, 2), _num(r.mcd_mm, 2),
            "" if r.empty == "none" else r.empty,
        )
    console.print(table)
    if (d := result.lesions) is not None:
        console.print(
            f"lesions: {d.n_ref} reference, {d.n_pred} predicted; TP {d.tp}, FN {d.fn}, FP {d.fp}; "
            f"sensitivity {_rate(d.sensitivity)}, precision {_rate(d.precision)}"
        )
    if (m := result.rmsd) is not None:
        mcds = ", ".join(f"{k}: {_num(v, 2)}" for k, v in m.mcd_mm.items()) or "none"
        console.print(f"RMSD {_num(m.rmsd_mm, 2)} mm (liver MSD {_num(m.msd_mm, 2)} mm; landmark MCD mm {mcds})")
        if m.missing_in_pred or m.missing_in_ref:
            console.print(f"landmarks left out: missing in pred {list(m.missing_in_pred)}, missing in ref {list(m.missing_in_ref)}")


def _num(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else "inf"


def _rate(v: float | None) -> str:
    return "undefined" if v is None else f"{v:.3f}"
