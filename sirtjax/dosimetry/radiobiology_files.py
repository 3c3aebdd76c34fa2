"""What ``sirtjax radiobiology`` does: a dose file (Gy), its liver and lesion masks and a tissue-parameter file in,
the BED map, BED DVHs and per-VOI summaries (:mod:`sirtjax.dosimetry.bed_map`, docs/radiobiology.md) written out.

Masks on another grid are resampled (nearest neighbour) onto the dose grid. Bad input raises
:class:`~sirtjax.errors.InputError` naming the file at fault, before anything is written; the output folder is
published whole (:mod:`sirtjax.outputs`).
"""

from __future__ import annotations

from pathlib import Path

from sirtjax.dosimetry.bed_map import BedResult, dose_radiobiology, load_tissue_models, radiobiology_report
from sirtjax.dosimetry.masks import liver_compartments
from sirtjax.dosimetry.outputs import write_dvh_csv
from sirtjax.errors import InputError
from sirtjax.io import read_volume, write_volume
from sirtjax.outputs import check_output, output_dir, write_json
from sirtjax.preprocess import labels_on_grid


def radiobiology_from_files(*, dose: Path, liver: Path, params: Path, out: Path, lesions: Path | None = None,
                            overwrite: bool = False) -> BedResult:
    """The radiobiology of the dose map (Gy) in ``dose`` under the tissue models in ``params``, its compartments from
    the ``liver`` and ``lesions`` masks (any grid); writes bed.nii.gz, bed_dvh.csv and report.json into ``out``."""
    inputs = [p for p in (dose, liver, lesions, params) if p is not None]
    check_output(out, overwrite=overwrite, inputs=inputs)
    models = load_tissue_models(params)
    dose_gy = read_volume(dose)
    masks = {}
    for name, path in (("liver", liver), ("lesions", lesions)):
        if path is not None:
            try:
                masks[name] = labels_on_grid(read_volume(path), dose_gy, name, "dose")[0]
            except ValueError as exc:
                raise InputError(path, str(exc)) from None
    labels, names = liver_compartments(masks["liver"], masks.get("lesions"))
    try:
        result = dose_radiobiology(dose_gy, labels, tuple(names), models)
    except ValueError as exc:  # every compartment lacks a model or a voxel: the parameters and the masks together
        raise InputError(f"{params} with {liver}", str(exc)) from None
    with output_dir(out, overwrite=overwrite, inputs=inputs) as tmp:
        write_volume(result.bed, tmp / "bed.nii.gz")
        write_dvh_csv(result.bed_statistics, [v.name for v in result.vois], tmp / "bed_dvh.csv", quantity="bed_gy")
        write_json({"dose": str(dose), **radiobiology_report(result, models)}, tmp / "report.json")
    return result
