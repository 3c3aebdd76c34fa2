"""Files of ``sirtjax plan`` / ``sirtjax verify`` (the I/O edge of the pipelines): maps, masks, reports.

Into a folder (the caller stages it with :func:`sirtjax.io.output_dir`, so it appears complete or
not at all), every map and mask as NIfTI in its own space:

- ``<anatomical>_liver|lesions|lungs.nii.gz``: VOIs on the session's CT/MR grid;
- ``<emission>_liver|lesions|lungs.nii.gz``: the same VOIs on the SPECT/PET grid;
- ``dose.nii.gz``: dose (Gy) on the emission grid; ``dvh.csv`` its cumulative DVHs;
- ``registration/<source>_to_<target>/displacement.nii.gz`` (ITK convention, target grid),
  ``warped.nii.gz`` (the diagnostic image on the target grid);
- ``rtstruct/``: the VOIs as a DICOM RT Structure Set with its CT series and as a DICOM SEG
  (``seg.dcm``), and the dose as RT Dose
  (``rtdose.dcm``, Dose Summation Type PLAN for a plan, RECORD for a verification) in the CT's
  frame of reference (CT sessions only);
- ``report.json``, and ``report.html`` when the caller passes the page.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sirtjax.dosimetry.outputs import write_dvh_csv
from sirtjax.dosimetry.voxel import DoseResult
from sirtjax.io import write_volume
from sirtjax.outputs import write_json
from sirtjax.pipelines.mapping import Registered
from sirtjax.pipelines.plan import SessionVois, lesion_instances
from sirtjax.pipelines.inputs import Session
from sirtjax.report import write_report
from sirtjax.io.rtstruct import write_rtstruct


def write_session_outputs(folder: Path, session: Session, vois: SessionVois, dose: DoseResult,
                          registrations: tuple[Registered, ...], report: dict, html: str | None,
                          patient_id: str = "", rtdose_bits: int = 32) -> list[Path]:
    """Write one workflow's files into folder (see the module docstring); returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    anat, emission = session.anatomy.name, session.emission_name
    written = []

    def vol(v, name, dtype):
        if v is not None:
            written.append(write_volume(v, folder / f"{name}.nii.gz", dtype=dtype))

    for prefix, masks in ((anat, (vois.liver, vois.lesions, vois.lungs)),
                          (emission, (vois.liver_emission, vois.lesions_emission, vois.lungs_emission))):
        for kind, mask in zip(("liver", "lesions", "lungs"), masks):
            vol(mask, f"{prefix}_{kind}", np.uint8 if kind != "lesions" else np.uint16)
    vol(dose.dose, "dose", np.float32)
    write_dvh_csv(dose.statistics, list(dose.voi_names), folder / "dvh.csv")
    written.append(folder / "dvh.csv")
    for r in registrations:
        sub = folder / "registration" / f"{r.source}_to_{r.target}"
        sub.mkdir(parents=True, exist_ok=True)
        written += [write_volume(r.result.displacement, sub / "displacement.nii.gz", dtype=np.float32),
                    write_volume(r.result.warped, sub / "warped.nii.gz", dtype=np.float32)]
    if session.anatomy.modality == "CT":
        lesions = lesion_instances(vois.lesions)
        rois = {"liver": vois.liver, **lesions}
        types = {"liver": "ORGAN", **{name: "GTV" for name in lesions}}
        if vois.lungs is not None:
            rois["lungs"], types["lungs"] = vois.lungs, "ORGAN"
        summation = "PLAN" if report.get("workflow") == "plan" else "RECORD"
        given = {name for name in rois if vois.sources["lesions" if name in lesions else name].startswith("given")}
        written.append(write_rtstruct(session.anatomy.image, rois, folder / "rtstruct", patient_name=report["study"],
                                      patient_id=patient_id, roi_types=types, dose_gy=dose.dose, dose_summation=summation,
                                      dose_bits=rtdose_bits, given=given))
    written.append(write_json(report, folder / "report.json"))
    if html is not None:
        written.append(write_report(html, folder / "report.html"))
    return written
