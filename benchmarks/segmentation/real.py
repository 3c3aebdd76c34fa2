"""Liver models on the vendored real scans (datasets/real): DSC, volume error, stray components and time per scan.

Every model named (a shipped name, a model or run folder, or a commit's shipped liver model as ``git:COMMIT``) runs on
every real scan of the manifest as `sirtjax segment` runs it (`sirtjax.segmentation.validation.evaluate_scan`), and on
the variants of the 30-slice and DICOM CTs that the held-out checks make of a real CT: without contrast, MR-like, cut
close around the liver (`sirtjax.segmentation.validation.VARIANTS`). One row per image, one column per model: DSC
against the scan's reference liver, the segmented volume's error in % of the reference, and, where the thresholded
prediction had a second component of 50 ml or more (which `segment` drops, keeping the largest), its volume. Scans marked held out were neither trained on
nor used to choose a model. Then the time per image.

    python benchmarks/segmentation/real.py [--models liver,git:bf7379c,runs/liver_real] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import tempfile
from pathlib import Path

from sirtjax.models.store import load_model
from sirtjax.segmentation.postprocess import LARGE_COMPONENT_ML
from sirtjax.segmentation.validation import VARIANTS, ScanResult, evaluate_scan, real_scans

VARIED = ("ts_ct_30", "ts_ct_dicom_20")  # the CTs whose variants are rows too


def images() -> list[tuple[str, str]]:
    """(scan, variant) of every row: each scan as scanned, then the variants of VARIED."""
    scans = list(real_scans())
    return [(s, "as scanned") for s in scans] + [(s, v) for s in VARIED for v in VARIANTS if v != "as scanned"]


def model_dir(name: str, scratch: Path) -> str:
    """A loadable model for a name: ``git:COMMIT`` puts that commit's shipped liver model in a scratch folder."""
    if not name.startswith("git:"):
        return name
    commit = name[4:]
    folder = scratch / commit
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("model.json", "weights.npz"):
        blob = subprocess.run(["git", "show", f"{commit}:sirtjax/data/models/liver/{f}"], check=True, capture_output=True).stdout
        (folder / f).write_bytes(blob)
    return str(folder)


def cell(r: ScanResult) -> str:
    """A table cell: DSC, volume error, and a stray component that `segment` drops when it is large (>= 50 ml)."""
    extra = f", {r.stray_ml:.0f} ml stray" if r.stray_ml >= LARGE_COMPONENT_ML else ""
    return f"{r.dsc:.3f} ({r.volume_error_pct:+.0f} %{extra})"


def table(models: list[str], results: dict[str, list[ScanResult]]) -> str:
    """The markdown table: one row per scan, one column per model, then the time per scan."""
    scans = real_scans()
    lines = ["| real scan | reference ml | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for i, (name, variant) in enumerate(images()):
        ref = results[models[0]][i].reference_ml
        kind = scans[name].modality.upper() if variant == "as scanned" else variant
        label = f"{name}{' (held out)' if scans[name].held_out else ''}: {kind}"
        lines.append(f"| {label} | {ref:.0f} | " + " | ".join(cell(results[m][i]) for m in models) + " |")
    lines.append("| seconds per scan (min-max) | | " + " | ".join(
        f"{min(r.seconds for r in results[m]):.1f}-{max(r.seconds for r in results[m]):.1f}" for m in models) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="liver", help="comma-separated model names, folders or git:COMMIT")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    models = args.models.split(",")
    results: dict[str, list[ScanResult]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name in models:
            net, spec = load_model(model_dir(name, Path(scratch)))
            results[name] = []
            scans = real_scans()
            for scan, variant in images():
                results[name].append(evaluate_scan(net, spec, scans[scan], variant=variant))
                print(name, results[name][-1].scan, cell(results[name][-1]), f"{results[name][-1].seconds:.1f} s", flush=True)
    text = table(models, results) + f"\n\n{platform.processor() or platform.machine()}, {platform.python_version()}; " \
        "cells: DSC (segmented volume error), and the largest stray component of the prediction when >= 50 ml (dropped: the largest is kept).\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
