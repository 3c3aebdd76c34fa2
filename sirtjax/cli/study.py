"""``sirtjax study DICOM_ROOT -o STUDY``: a study folder (NIfTI + study.json) from a PACS export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtjax.cli._app import Overwrite, app


def parse_series_options(values: list[str]) -> dict[str, str]:
    """``UID=NAME`` options as {uid: name}; InputError on a value without '='."""
    from sirtjax.errors import InputError

    out = {}
    for v in values:
        uid, sep, name = v.partition("=")
        if not sep or not uid or not name:
            raise InputError("--series", f"{v!r}: expected SERIES_UID=NAME (e.g. 1.2.840...=diag_ct, or =ignore)")
        out[uid.strip()] = name.strip()
    return out


def import_dicom(root: Path, out: Path, series: list[str], overwrite: bool = False) -> Path:
    """Scan root, assign the series, print what was found and how it is used, write the study; returns study.json."""
    from sirtjax.io.dicom_study import assign_series, scan_dicom, write_study

    found, skipped = scan_dicom(root)
    assignment = assign_series(found, parse_series_options(series))
    role_of = {s.uid: role for role, s in assignment.chosen.items()}
    why = {s.uid: reason for s, reason in assignment.unused}
    typer.echo(f"DICOM series below {root} ({skipped} other files passed over):", err=True)
    for s in found:  # one line a series, the whole UID last (for --series)
        use = role_of.get(s.uid) or f"not used ({why.get(s.uid, 'no role')})"
        modality = s.modality + (f" {s.nuclide}" if s.nuclide else "")
        typer.echo(f"  {use}: {modality} {s.date} '{s.description}', {len(s.files)} files, {s.uid}", err=True)
    path, warnings = write_study(assignment, out, name=root.resolve().name, overwrite=overwrite)
    for w in warnings:
        typer.echo(f"warning: {w}", err=True)
    return path


Series = Annotated[list[str], typer.Option("--series", help="UID=ROLE (or UID=ignore) for a series of a PACS export; "
                                           "repeatable.")]


@app.command()
def study(
    dicom_root: Annotated[Path, typer.Argument(help="A PACS export: a folder tree of DICOM files (any layout).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Study folder to write (study.json + images/).")],
    series: Series = [],  # noqa: B006
    overwrite: Overwrite = False,
) -> None:
    """Make a study folder from a PACS export: group the files by series, assign sessions and roles from
    the tags (radionuclide, frame of reference, modality), convert the series to NIfTI, write study.json.

    Prints one line per series found: its role or why it is not used. Then `sirtjax plan OUT` / `sirtjax verify OUT`
    (which also take DICOM_ROOT directly).
    """
    from sirtjax.outputs import check_output

    check_output(out, overwrite=overwrite, inputs=[dicom_root])  # before scanning: never inside the export it reads
    path = import_dicom(dicom_root, out, series, overwrite)
    typer.echo(f"study written to {path}")
