"""The HTML report of plan() and verify(): sections assembled from their results (no file I/O here).

One page for a plan, a verification, or both (the demo): study, VOI sources, registration checks
(checkerboard and contour overlays of each registered diagnostic image), compartments and lung
shunt, the prescriptions side by side, fused CT/SPECT and CT/PET slices with contours, dose
tables, the predicted DVHs, the plan-vs-verification comparison and DVHs, warnings, software
version and constants. The PET is shown in MBq/ml.
A verification against an earlier plan's folder shows that plan's numbers (from its report.json)
and points to the plan's own report for its figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sirtjax.pipelines.mapping import Registered
from sirtjax.pipelines.plan import EnsembleRegistrationCheck, PlanResult, SessionVois, lesion_instances
from sirtjax.pipelines.verify import VerifyResult
from sirtjax.report import (FigurePng, KeyValues, Note, Section, Table, checkerboard_png, comparison_table, dose_table,
                            dvh_png, fused_slices_png, percentile_window, prescription_table, provenance_section,
                            render_report, study_section)
from sirtjax.report.radiobiology import radiobiology_section
from sirtjax.report.slices import mask_center_mm
from sirtjax.report.tables import fmt
from sirtjax.volume import Volume

_CT_WINDOW = (-160.0, 240.0)


def _contours(liver: Volume | None, lesions: Volume | None) -> dict:
    """Contours by VOI name: the liver and each lesion instance (so each lesion has its DVH colour)."""
    return {**({"liver": liver} if liver is not None else {}), **lesion_instances(lesions)}


def _centre_mm(vois: SessionVois):
    """The centroid (LPS mm) of the largest lesion, so the slices cut through it; None (liver centroid) without lesions."""
    if vois.lesions is None:
        return None
    a = np.asarray(vois.lesions.array)
    counts = np.bincount(a.ravel().astype(np.int64))
    counts[0] = 0
    return mask_center_mm(vois.lesions.with_array(a == int(np.argmax(counts)))) if counts.any() else None


def _window(modality: str):
    return _CT_WINDOW if modality == "CT" else None


def registration_section(registrations: Sequence[Registered], anatomy, vois: SessionVois, title: str) -> Section:
    """Checkerboard and contour overlay per registered diagnostic image, with Dice and Jacobian numbers."""
    from sirtjax.report import contour_overlay_png

    blocks = []
    for r in registrations:
        c = r.checks
        items = [("Preset", r.preset), ("Landmarks used", ", ".join(map(str, c.landmarks)) or "–"),
                 ("Liver Dice (warped vs own liver)", fmt(c.liver_dice, 3) or "–"),
                 ("det J ≤ 0 (% of voxels)", fmt(100 * c.jacobian.fraction_nonpositive, 3)),
                 ("det J in the liver, min / max", f"{fmt(c.jacobian_liver.min)} / {fmt(c.jacobian_liver.max)}")]
        blocks.append(KeyValues(tuple((f"{r.source} → {r.target}: {k}", str(v)) for k, v in items)))
        blocks.append(FigurePng(checkerboard_png(anatomy.image, r.result.warped, contour=vois.liver,
                                                 fixed_window=_window(anatomy.modality),
                                                 warped_window=percentile_window(r.result.warped.array)),
                                f"Checkerboard of {r.target} and the registered {r.source}: edges continuing across "
                                "squares mean good alignment."))
        blocks.append(FigurePng(contour_overlay_png(anatomy.image, _contours(vois.liver, vois.lesions),
                                                    _contours(r.liver, r.lesions), center_mm=_centre_mm(vois),
                                                    window=_window(anatomy.modality)),
                                f"VOIs of {r.target} (solid) and of {r.source} mapped by the registration (dashed)."))
    if not blocks:
        blocks.append(Note("No registration was needed: the VOIs were given on this session's image."))
    return Section(title, tuple(blocks))


def session_section(title: str, anatomy, vois: SessionVois, emission: tuple, dose, dose_caption: str,
                    table_caption: str, extra: Sequence = ()) -> Section:
    """Fused emission and dose slices on the anatomical image with the VOIs, the dose table, then ``extra`` blocks.

    emission: (Volume, colour-bar label with units, name in captions); dose_caption is completed
    with the dose model and a closing parenthesis.
    """
    image, label, name = emission
    contours, window, centre = _contours(vois.liver, vois.lesions), _window(anatomy.modality), _centre_mm(vois)
    sep = "" if dose_caption.endswith("(") else "; "
    through = " (slices through the largest lesion)" if centre is not None else ""
    return Section(title, (
        FigurePng(fused_slices_png(anatomy.image, overlay=image, contours=contours, anatomy_window=window,
                                   overlay_label=label, center_mm=centre),
                  f"{anatomy.name} with {name} and the VOIs{through}."),
        FigurePng(fused_slices_png(anatomy.image, overlay=dose.dose, contours=contours, anatomy_window=window,
                                   overlay_label="dose (Gy)", center_mm=centre),
                  f"{dose_caption}{sep}{dose.model.upper()} model)."),
        dose_table(dose.records(), caption=table_caption), *extra))


def pet_emission(pet: Volume) -> tuple[Volume, str, str]:
    """The 90Y PET for display, as session_section's emission: converted from Bq/ml to MBq/ml (readable colour-bar ticks)."""
    return pet.with_array(np.asarray(pet.array, np.float32) * 1e-6), "PET (MBq/ml)", "the 90Y PET"


def dvh_figure_block(dose, caption: str) -> FigurePng:
    """The cumulative DVHs of one dose result (plan or verification) as a figure block."""
    s = dose.statistics
    return FigurePng(dvh_png({"plan": (s.dvh_edges_gy, s.cdvh_fraction, dose.voi_names)}), caption)


def vois_section(title: str, report: dict) -> Section:
    """The VOIs' sources and, when a lesion model found the lesions, a table of them with how to replace them."""
    blocks = [KeyValues(tuple((k.capitalize(), v) for k, v in report["vois"].items()))]
    found = report.get("lesions_found", [])
    if found:
        rows = tuple((f"lesion_{f['id']}", f["image"], fmt(f["volume_ml"], 2), fmt(f["diameter_mm"], 0), fmt(f["confidence"], 2),
                      fmt(f["cnr"], 0)) for f in found)
        blocks += [Table(("Lesion", "Found on", "Volume (ml)", "Diameter (mm)", "Confidence", "Contrast-to-noise"), rows,
                         "Lesions found by the lesion model (no lesion mask was given): confidence is the mean "
                         "probability over the lesion; the diameter is that of the sphere of its volume; contrast-to-noise "
                         "is its contrast against the liver around it over the noise there, times the square root of its "
                         "voxels (Rose's criterion: found lesions under 5 are not kept; '-' when too little liver surrounds it)."),
                   Note("Automatic lesions: check them. To use your own, add a lesions mask (one id per lesion) to "
                        "that image in study.json and run again; a given mask is always used instead.")]
    return Section(title, tuple(blocks))


def plan_sections(p: PlanResult) -> list[Section]:
    """Sections of the planning part: VOIs, registration, compartments, prescriptions, predicted dose and DVHs."""
    anatomy, spect = p.session.anatomy, p.session.emission
    r = p.report
    m = p.compartments
    comp_rows = [("normal liver", fmt(r["compartments"]["normal_volume_ml_ct"], 1), fmt(m.normal_volume_ml, 1), "1.00")]
    comp_rows += [(n.replace("_", " "), fmt(float(v_ct), 1), fmt(float(v), 1), fmt(float(tn), 2))
                  for n, v_ct, v, tn in zip(m.tumour_names, r["compartments"]["tumour_volume_ml_ct"],
                                            m.tumour_volume_ml, m.tn_ratios)]
    ls = r["lung_shunt"]
    lsf_items = [("Lung shunt fraction used (%)", fmt(100 * ls["fraction"], 1)), ("Source", ls["source"])]
    if ls["from_spect"] is not None:
        lsf_items.append(("LSF from SPECT lung/liver counts (%)", fmt(100 * ls["from_spect"], 1)))
    targets = ", ".join(f"{k.replace('_', ' ')} {v['dose_gy']:g} Gy ({v['source']})" for k, v in r["target_doses"].items())
    activity = r["planned_activity"]
    return [
        vois_section("VOIs", r),
        registration_section(p.registrations, anatomy, p.vois, f"Registration onto {anatomy.name} (planning)"),
        Section("Compartments on the MAA SPECT", (
            Table(("Compartment", "Volume on CT (ml)", "Volume on SPECT (ml)", "T/N ratio"), tuple(comp_rows),
                  "T/N: count concentration over that of normal liver, on the SPECT grid; masses use the CT volumes."),
            KeyValues(tuple(lsf_items)))),
        Section("Prescription", (prescription_table([pr.to_dict() for pr in p.prescriptions]),
                                 Note(f"Targets: {targets}. Lung mass 1 kg (convention)."))),
        session_section("Planning: MAA SPECT/CT", anatomy, p.vois, (spect, "SPECT (counts)", "the MAA SPECT"), p.dose,
                        f"Predicted dose for {activity['gbq']:.3f} GBq ({activity['source']}",
                        "Predicted dose per VOI (SPECT grid).",
                        (dvh_figure_block(p.dose, f"Predicted cumulative DVHs per VOI for {activity['gbq']:.3f} GBq "
                                                  "(SPECT grid)."),)),
        *([] if p.uncertainty is None else [uncertainty_section(p.uncertainty)]),
        *([] if p.radiobiology is None else [radiobiology_section(p.radiobiology, p.report["radiobiology"]["models"],
                                                                  "Radiobiology (predicted dose)")]),
    ]


def uncertainty_section(u: dict, title: str = "Dose uncertainty") -> Section:
    """A dose-uncertainty ensemble (plan or verification): intervals beside the nominal values, the stated sds, the
    tornado chart."""
    from sirtjax.report.uncertainty import tornado_png, uncertainty_table

    s = u["stated"]
    activity = (f"activity calibration sd {100 * s.calibration_rel_sd:g} %, residual {100 * s.residual_fraction:g} ± "
                f"{100 * s.residual_sd:g} %, lung shunt sd {100 * s.lung_shunt_sd:g} percentage points"
                if u["emission"] == "counts" else f"PET quantification sd {100 * s.calibration_rel_sd:g} %")
    stated = (f"{u['members']} {'plans' if u['emission'] == 'counts' else 'PET doses'} drawn from: {activity}, "
              f"liver and lesion outlines sd {s.boundary_sd_mm:g} mm (stated assumptions)"
              + (f"; the lesions of the plan's registration or of {u['registrations']} more with other sampling keys "
                 f"and spring weights w_reg {_range(c.w_reg for c in u['registration_checks'])}"
                 + _held_out(u["registration_checks"]) + "." if u["registrations"] else "."))
    needed = u.get("activity_for_target")
    return Section(title, (
        uncertainty_table(u["vois"], "Nominal value [5 %, 95 %] of the ensemble; the widest source is the one that, "
                                     "varied alone, widens the mean dose's interval most."),
        *([] if needed is None else [activity_note(needed)]),
        Note(stated),
        FigurePng(tornado_png(u["vois"]), "Mean dose per VOI: the 5-95 % interval with each source alone and with all "
                                          "together; the red line is the reported dose.")))


def _held_out(checks: Sequence[EnsembleRegistrationCheck]) -> str:
    errors = [c.held_out_landmark_mcd_mm for c in checks if c.held_out_landmark_mcd_mm is not None]
    return (f", each guided by a random half of the landmarks (mass-centre distance of the other half "
            f"{_range(errors)} mm)") if errors else ""


def _range(values) -> str:
    v = sorted(values)
    return f"{v[0]:.3g}" if v[0] == v[-1] else f"{v[0]:.3g}-{v[-1]:.3g}"


def activity_note(a: dict) -> Note:
    """The activity a prescription's dose target needs, with its 5-95 % interval over the ensemble and its widest
    source (:func:`sirtjax.dosimetry.uncertainty.activity_for_target`)."""
    voi = a["voi"].replace("_", " ")
    dominant = "" if a["dominant"] is None else f"; widest source: {a['dominant'].replace('_', ' ')}"
    return Note(f"Activity for the prescription's target ({voi} mean {a['target_gy']:g} Gy): {fmt(a['nominal'], 2)} GBq "
                f"[{fmt(a['p5'], 2) or '–'}, {fmt(a['p95'], 2) or '–'}] (5-95 % over the ensemble){dominant}.")


def saved_plan_sections(report: dict, folder: str) -> list[Section]:
    """Sections of a plan read from its folder (report.json): planned activity, LSF, prescriptions, dose table."""
    ls, activity = report["lung_shunt"], report["planned_activity"]
    items = (("Plan folder", folder), ("Planned activity (GBq)", f"{activity['gbq']:.3f} ({activity['source']})"),
             ("Lung shunt fraction used (%)", f"{fmt(100 * ls['fraction'], 1)} ({ls['source']})"),
             ("VOIs", "; ".join(f"{k}: {v}" for k, v in report.get("vois", {}).items())))
    blocks = [KeyValues(items)]
    if report.get("prescriptions"):
        blocks.append(prescription_table(report["prescriptions"]))
    blocks += [dose_table(report["dose"]["vois"], caption="Predicted dose per VOI (MAA SPECT grid), from the plan."),
               Note(f"The plan's figures (VOIs, registration checks, predicted dose) are in {folder}/report.html.")]
    return [Section("Plan (read from its folder)", tuple(blocks))]


def verify_sections(v: VerifyResult) -> list[Section]:
    """Sections of the verification part: VOIs, registration, PET dose, comparison with the plan, DVHs."""
    anatomy, pet, p = v.session.anatomy, v.session.emission, v.plan
    blocks = [comparison_table(v.comparison)]
    if "resolution" in v.report:
        r = v.report["resolution"]
        blocks.insert(0, Note(f"The 90Y PET ({r['pet_fwhm_mm']:g} mm FWHM) and the MAA SPECT ({r['spect_fwhm_mm']:g} mm) "
                              f"were blurred to {r['matched_to_fwhm_mm']:g} mm FWHM first: the PET dose and the plan's "
                              "dose, recomputed from the blurred SPECT, are compared at one resolution."))
    dvhs = {"plan": (p.dose.statistics.dvh_edges_gy, p.dose.statistics.cdvh_fraction, p.dose.voi_names)}
    if v.comparison_at_injected is not None:
        blocks.append(Note(f"Plan at {p.planned_activity_gbq:.3f} GBq above. Below, the plan's dose map recomputed for "
                           f"the injected {v.report['injected_activity_gbq']:.3f} GBq (same distribution), so the "
                           "differences show where the spheres went rather than how many were given."))
        blocks.append(comparison_table(v.comparison_at_injected))
        s = v.plan_at_injected.statistics
        dvhs = {"plan (injected activity)": (s.dvh_edges_gy, s.cdvh_fraction, v.plan_at_injected.voi_names)}
    dvhs["verification"] = (v.dose.statistics.dvh_edges_gy, v.dose.statistics.cdvh_fraction, v.dose.voi_names)
    plan_label = next(iter(dvhs))
    blocks.append(FigurePng(dvh_png(dvhs), f"Cumulative DVHs per VOI: {plan_label} (solid) and verification (dashed)."))
    return [
        vois_section("VOIs (verification)", v.report),
        registration_section(v.registrations, anatomy, v.vois, f"Registration onto {anatomy.name} (verification)"),
        session_section("Verification: 90Y PET", anatomy, v.vois, pet_emission(pet), v.dose,
                        "Dose from the 90Y PET (", "Dose from the 90Y PET per VOI (PET grid)."),
        Section("Plan vs verification", tuple(blocks)),
        *([] if "recovery" not in v.report else [recovery_section(v.report["recovery"])]),
        *([] if v.uncertainty is None else [uncertainty_section(v.uncertainty, "Dose uncertainty (verification)")]),
        *([] if v.radiobiology is None else [radiobiology_section(v.radiobiology, v.report["radiobiology"]["models"],
                                                                  "Radiobiology (verification)")]),
    ]


def recovery_section(recovery: dict) -> Section:
    """The PET dose's lesion means divided by their recovery coefficients (report.json's ``recovery``)."""
    rows = tuple((r.name.replace("_", " "), fmt(r.volume_ml, 1), fmt(r.coefficient, 3), fmt(r.mean_gy, 1),
                  fmt(r.corrected_mean_gy, 1)) for r in recovery["lesions"])
    return Section("Lesion recovery (90Y PET)", (Table(
        ("Lesion", "Volume (ml)", "Recovery coefficient", "Mean dose (Gy)", "Corrected mean dose (Gy)"), rows,
        f"Each lesion's mean divided by the recovery coefficient at its volume. Curve: {recovery['source']}."),))


def workflow_report(study: dict, plan: PlanResult | None, verification: VerifyResult | None = None, *,
                    subtitle: str = "", parameters: dict | None = None) -> str:
    """The whole HTML page for a plan and/or its verification: study = StudyManifest.to_dict().

    plan None: the verification was compared with a plan folder, whose numbers are shown instead.
    """
    if plan is None and verification is None:
        raise ValueError("workflow_report needs a plan, a verification or both")
    sections, warnings = [study_section(study)], []
    if plan is not None:
        sections += plan_sections(plan)
        warnings += list(plan.warnings)
    else:
        sections += saved_plan_sections(verification.plan.report, verification.plan.source)
    if verification is not None:
        sections += verify_sections(verification)
        warnings += list(verification.warnings)
    constants = (plan or verification).dose.constants.to_dict()
    sections.append(provenance_section(constants, parameters=parameters))
    title = ("SIRT plan and verification" if verification is not None else "SIRT plan") + f" — {study['name']}"
    unique = list({(w.code, w.message): w for w in warnings}.values())
    return render_report(title, sections, subtitle=subtitle, warnings=unique)
