"""Build an example report from a phantom study with its TRUE masks (no segmentation or registration).

    python scripts/example_report.py OUT_FOLDER [--seed N] [--small]

Writes OUT_FOLDER/report.html (and prints its path). It exercises every report section on real
phantom images: fused CT/SPECT and CT/PET slices with the true VOIs, a registration check of the
90Y CT against the MAA CT resampled by identity (a deliberately unregistered pair: what a bad
registration looks like), DVHs and the plan-vs-verification tables from sirtjax.dosimetry. It is a
stand-in for ``sirtjax plan``/``verify`` until those compose segmentation and registration.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from sirtjax import dosimetry
from sirtjax.phantom import PhantomConfig, generate_study, write_study
from sirtjax.preprocess import resample_to
from sirtjax.dosimetry.comparison import compare_vois
from sirtjax.report import (FigurePng, Note, Section, checkerboard_png, comparison_table, contour_overlay_png,
                            dose_table, dvh_png, fused_slices_png, prescription_table,
                            provenance_section, render_report, study_section, write_report)
from sirtjax.io.study import load_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="the small phantom config (fast)")
    args = ap.parse_args()
    config = PhantomConfig.small() if args.small else PhantomConfig()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_study(generate_study(args.seed, config), Path(tmp) / "study")
        study = load_study(folder)
        html = build(study)
    print(write_report(html, args.out / "report.html"))


def build(study) -> str:
    ct, spect = study.read("maa_ct"), study.read("maa_spect")
    liver, lesions = (study.read_mask("maa_ct", k) for k in ("liver", "lesions"))
    y_ct, pet = study.read("y90_ct"), study.read("y90_pet")
    y_liver, y_lesions = (study.read_mask("y90_ct", k) for k in ("liver", "lesions"))
    planned = study.activities["y90_injected_gbq"]
    lsf = study.read_truth()["lung_shunt_fraction"]["maa"]  # the lungs may lie outside a small SPECT field
    plan = dosimetry.voxel_dosimetry(spect, liver, lesions=lesions, activity_gbq=planned, lung_shunt_fraction=lsf)
    verif = dosimetry.voxel_dosimetry(pet, y_liver, lesions=y_lesions, input_kind="bq-per-ml")
    les_ml = [r["volume_ml"] for r in plan.report["vois"] if r["name"].startswith("lesion")]
    liver_ml = next(r["volume_ml"] for r in plan.report["vois"] if r["name"] == "liver")
    normal_kg = max(liver_ml - sum(les_ml), 1.0) * 1.03e-3
    tn = [2.5] * len(les_ml)
    p = study.patient
    prescriptions = [
        dosimetry.partition(study.target_doses_gy.get("normal_liver", 40.0), normal_kg, [v * 1.03e-3 for v in les_ml],
                            tn, lung_shunt_fraction=lsf),
        dosimetry.mono_compartment(study.target_doses_gy.get("whole_liver", 50.0), liver_ml * 1.03e-3,
                                   lung_shunt_fraction=lsf),
        dosimetry.bsa_method(p["height_cm"] / 100, p["weight_kg"], sum(les_ml), liver_ml - sum(les_ml),
                             lung_shunt_fraction=lsf),
    ]
    plan_records, verif_records = plan.report["vois"], verif.report["vois"]
    diffs = compare_vois(plan_records, verif_records)
    warnings = [w for pr in prescriptions for w in pr.warnings] + plan.report["warnings"] + verif.report["warnings"]
    voi = {"liver": liver, "lesions": lesions}
    sections = [
        study_section(study.to_dict()),
        Section("Prescription", (prescription_table([pr.to_dict() for pr in prescriptions]),
                                 Note(f"Lung shunt fraction {100 * lsf:.1f} % (the phantom's true value). T/N 2.5 "
                                      "assumed for every lesion in this example."))),
        Section("Planning: MAA SPECT/CT", (
            FigurePng(fused_slices_png(ct, overlay=spect, contours=voi, overlay_label="SPECT (counts)"),
                      "MAA CT (soft-tissue window) with the MAA SPECT and the VOIs."),
            FigurePng(fused_slices_png(ct, overlay=plan.dose, contours=voi, overlay_label="dose (Gy)"),
                      f"Predicted dose for {planned:.2f} GBq (voxel S-value kernel)."),
            dose_table(plan_records, caption="Predicted dose per VOI."),
        )),
        Section("Verification: 90Y PET/CT", (
            FigurePng(fused_slices_png(y_ct, overlay=pet, contours={"liver": y_liver, "lesions": y_lesions},
                                       overlay_label="PET (Bq/ml)"), "90Y CT with the 90Y PET and the VOIs."),
            dose_table(verif_records, caption="Dose from the 90Y PET per VOI."),
        )),
        Section("Plan vs verification", (comparison_table(diffs),
                                         FigurePng(dvh_png({
                                             "plan": (plan.statistics.dvh_edges_gy, plan.statistics.cdvh_fraction, plan.voi_names),
                                             "verification": (verif.statistics.dvh_edges_gy, verif.statistics.cdvh_fraction,
                                                              verif.voi_names)}), "Cumulative DVHs."))),
        Section("Registration check (unregistered pair)", (
            FigurePng(checkerboard_png(ct, resample_to(y_ct, ct), contour=liver),
                      "Checkerboard: MAA CT and 90Y CT resampled by identity (no registration)."),
            FigurePng(contour_overlay_png(ct, {"liver": liver}, {"liver": resample_to(y_liver, ct, order=0)}),
                      "Liver of the MAA CT (solid) and of the 90Y CT by identity (dashed)."),
        )),
        provenance_section(plan.report["constants"], parameters={"dose model": plan.report["model"]}),
    ]
    return render_report(f"SIRT report — {study.name}", sections, subtitle="Example with the phantom's true masks",
                         warnings=warnings)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
