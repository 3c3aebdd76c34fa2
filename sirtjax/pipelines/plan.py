"""plan(): the SIRT planning workflow on a MAA SPECT/CT session (thesis ch. 8.3, DESIGN.md).

1. Liver on the MAA CT: given, or segmented (``WorkflowOptions.segmenter``).
2. Lesions: given on the MAA CT, or mapped from a diagnostic CT/MR by registration
   (:mod:`sirtjax.pipelines.mapping`).
3. VOIs into MAA SPECT space: the SPECT shares the MAA CT's world frame, so liver, lesions and
   lungs are resampled onto the SPECT grid by nearest neighbour (:func:`sirtjax.preprocess.resample_to`).
4. Compartments on the SPECT: volumes, counts, tumour-to-normal ratios, and the lung shunt fraction:
   the planar value when given (command line, else manifest; the clinical standard), else from SPECT lung and liver
   counts (a warning when the lung mask touches the CT field of view's edge: the lungs are then
   cut and the LSF underestimated), else 0 with a warning.
5. Prescriptions side by side: partition (normal-liver target), mono-compartment (whole-liver
   target), BSA (when height and weight are known). Masses: CT-grid volumes (finer than the
   SPECT's) times the liver density; T/N ratios: SPECT counts per ml.
6. Predicted dose with the planned activity (the study's ``y90_planned_gbq``, else the chosen
   method's prescription) and the dose statistics per VOI (:func:`sirtjax.dosimetry.voxel_dosimetry`).
7. With ``WorkflowOptions.radiobiology``: BED, EUD, NTCP and TCP of the predicted dose per compartment.
8. With ``WorkflowOptions.uncertainty``: the dose-uncertainty ensemble of that dose over the stated
   calibration, residual, lung-shunt and outline errors (:mod:`sirtjax.dosimetry.uncertainty`), the
   outlines moved on the CT grid, and the interval of the activity that the chosen prescription's dose target
   needs (partition: the normal liver's mean; mono-compartment: the whole liver's; BSA has no dose target).

Approximations: nearest-neighbour resampling of masks onto the 4-5 mm SPECT grid changes small
VOI volumes by a voxel layer; SPECT blur (about 12 mm FWHM) spills counts out of small lesions,
lowering their measured T/N ratios and predicted doses; lung mass 1 kg in the prescriptions, and in
the dose map's lung dose when the lung mask is cut by the CT's field of view (its volume is then no
lung mass; the mask still gives the LSF from SPECT counts when no planar LSF is known).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import numpy as np

from sirtjax import keys
from sirtjax.dosimetry import (LIVER_DENSITY_G_ML, DoseResult, ResultWarning, MeasuredCompartments, Prescription,
                               bsa_method, measure_compartments, mono_compartment, partition, voxel_dosimetry)
from sirtjax.dosimetry.activity import choose_lung_shunt
from sirtjax.dosimetry.bed_map import BedResult, radiobiology_report, workflow_radiobiology
from sirtjax.dosimetry.dose import voxel_volume_ml
from sirtjax.dosimetry.uncertainty import activity_for_target, ensemble, summarise
from sirtjax.pipelines.inputs import Anatomy, Session, StudyData, WorkflowOptions
from sirtjax.pipelines.mapping import (Registered, landmark_error_mm, lesions_of, liver_of, register_anatomy,
                                      without_landmarks)
from sirtjax.preprocess import resample_to
from sirtjax.programs import Program
from sirtjax.registration.presets import PRESETS
from sirtjax.plausibility import check_liver_volume
from sirtjax.volume import Volume


@dataclasses.dataclass(frozen=True)
class SessionVois:
    """Liver, lesion instances and lungs on the anatomical grid and on the emission grid (None: absent)."""

    liver: Volume
    lesions: Volume | None
    lungs: Volume | None
    liver_emission: Volume
    lesions_emission: Volume | None
    lungs_emission: Volume | None
    sources: dict  # JSON-ready: where each VOI came from
    lesions_found: list = dataclasses.field(default_factory=list)  # JSON-ready: each lesion a lesion model found


@dataclasses.dataclass(frozen=True)
class PlanResult:
    """Everything the planning workflow computed; ``report`` is the JSON-ready summary (report.json)."""

    session: Session
    vois: SessionVois
    registrations: tuple[Registered, ...]
    compartments: MeasuredCompartments
    lung_shunt_fraction: float
    prescriptions: tuple[Prescription, ...]
    planned_activity_gbq: float
    planned_activity_source: str  # the study's planned activity, or the prescription method that gave it
    dose: DoseResult
    warnings: tuple[ResultWarning, ...]
    report: dict
    uncertainty: dict | None = None  # the ensemble's summary (WorkflowOptions.uncertainty); report holds its JSON
    radiobiology: BedResult | None = None  # BED, EUD, NTCP, TCP per VOI (WorkflowOptions.radiobiology)


def session_vois(session: Session, diagnostics: Sequence[Anatomy], options: WorkflowOptions, *,
                 key: jax.Array, progress=None) -> tuple[SessionVois, list[Registered]]:
    """Liver (own), lesions (given or registered) and lungs (given) of a session, also on its emission grid."""
    anatomy = session.anatomy
    liver, liver_source = liver_of(anatomy, options, references=diagnostics)
    found = lesions_of(anatomy, diagnostics, target_liver=liver, options=options, key=key, progress=progress)
    lesions, lesion_source, registrations = found.lesions, found.source, found.registrations
    grid = session.emission

    def on_grid(mask):
        return None if mask is None else resample_to(mask, grid, order=0, programs=options.programs)

    liver_e, lesions_e = on_grid(liver), on_grid(lesions)
    lungs, lungs_e, lung_source = anatomy.lungs, on_grid(anatomy.lungs), "none"
    if lungs is not None:
        lung_source = f"given on {anatomy.name}"
        region = np.asarray(liver_e.array) != 0
        if lesions_e is not None:
            region |= np.asarray(lesions_e.array) != 0
        if not np.any((np.asarray(lungs_e.array) != 0) & ~region):  # the CT stops below the lungs
            lungs = lungs_e = None
            lung_source += ", but no lung voxel outside the liver on the emission grid (not used)"
    sources = {"liver": f"{liver_source} on {anatomy.name}", "lesions": lesion_source, "lungs": lung_source}
    vois = SessionVois(liver, lesions, lungs, liver_e, lesions_e, lungs_e, sources, found.found)
    return vois, registrations


def lesion_instances(lesions: Volume | None) -> dict[str, Volume]:
    """A lesion label map (ids > 0) as one 0/1 mask per instance, named lesion_<id> like the dose tables; {} for None."""
    if lesions is None:
        return {}
    a = np.asarray(lesions.array)
    return {f"lesion_{i}": lesions.with_array((a == i).astype(np.uint8)) for i in np.unique(a) if i > 0}


def session_warnings(vois: SessionVois, registrations: Sequence[Registered], session: Session) -> list[ResultWarning]:
    """Implausible VOIs and registrations of a session: liver volume, liver folding, lesions lost on the emission grid."""
    anatomical = session.anatomy.name
    liver_ml = float(np.count_nonzero(np.asarray(vois.liver.array))) * voxel_volume_ml(vois.liver.spacing_mm)
    out = check_liver_volume(liver_ml, f"{anatomical} liver ({vois.sources['liver']})")
    for r in registrations:
        out += list(r.warnings)
    return out + lesions_lost_on_emission_grid(vois, anatomical, session.emission_name)


def lesions_lost_on_emission_grid(vois: SessionVois, anatomical: str, emission: str) -> list[ResultWarning]:
    """A warning naming the lesions present on the anatomical grid but without a voxel on the emission grid.

    Nearest-neighbour resampling onto the coarser SPECT/PET grid drops lesions smaller than about
    a voxel; they are then in no compartment, prescription or dose statistic. [] when none is lost.
    """
    if vois.lesions is None:
        return []
    ml = voxel_volume_ml(vois.lesions.spacing_mm)
    a = np.asarray(vois.lesions.array)
    kept = set() if vois.lesions_emission is None else set(np.unique(np.asarray(vois.lesions_emission.array)).tolist())
    lost = [(int(i), np.count_nonzero(a == i) * ml) for i in np.unique(a) if i > 0 and int(i) not in kept]
    if not lost:
        return []
    names = ", ".join(f"lesion_{i} ({v:.2g} ml)" for i, v in lost)
    return [ResultWarning("lesion_lost_on_emission_grid",
                             f"{names} on {anatomical} has no voxel on the {emission} grid (smaller than about a "
                             "voxel): not in the compartments, prescription or dose statistics", float(len(lost)))]


def cut_by_field_of_view(mask: Volume) -> bool:
    """True when a non-empty mask (z, y, x) touches the first or last slice of its grid along any axis."""
    a = np.asarray(mask.array) != 0
    return any(bool(np.any(np.take(a, i, axis=ax))) for ax in range(3) for i in (0, -1))


def ct_volumes_ml(vois: SessionVois, tumour_ids: Sequence[int]) -> tuple[float, np.ndarray]:
    """Normal-liver volume and per-tumour volumes (ml) counted on the anatomical grid, tumours by lesion label."""
    ml = voxel_volume_ml(vois.liver.spacing_mm)
    liver = np.asarray(vois.liver.array) != 0
    lesions = np.zeros(liver.shape, np.int64) if vois.lesions is None else np.asarray(vois.lesions.array, np.int64)
    counts = np.bincount(lesions.ravel(), minlength=int(lesions.max()) + 1)
    tumours = np.array([counts[i] * ml for i in tumour_ids], float)
    normal = float(np.count_nonzero(liver & (lesions == 0))) * ml
    return normal, tumours


def prescribe(study: StudyData, normal_ml: float, tumour_ml: np.ndarray, tn_ratios: np.ndarray, tumour_names,
              lsf: float, constants: str) -> tuple[list[Prescription], dict]:
    """Partition, mono-compartment and (with height and weight) BSA prescriptions; and the targets used."""
    kg = LIVER_DENSITY_G_ML * 1e-3
    d_normal, src_normal = study.target_dose_gy("normal_liver")
    d_whole, src_whole = study.target_dose_gy("whole_liver")
    out = [partition(d_normal, normal_ml * kg, list(tumour_ml * kg), list(tn_ratios), lung_shunt_fraction=lsf,
                     constants=constants, tumour_names=list(tumour_names)),
           mono_compartment(d_whole, (normal_ml + float(tumour_ml.sum())) * kg, lung_shunt_fraction=lsf,
                            constants=constants)]
    height, weight = study.patient.get("height_cm"), study.patient.get("weight_kg")
    if height is not None and weight is not None:
        out.append(bsa_method(height / 100.0, weight, float(tumour_ml.sum()), normal_ml, lung_shunt_fraction=lsf))
    targets = {"normal_liver": {"dose_gy": d_normal, "source": src_normal},
               "whole_liver": {"dose_gy": d_whole, "source": src_whole}}
    return out, targets


# The springs' weight w_reg was tuned between values a decade apart (10 and 100, benchmarks/registration/PRESETS.md):
# the ensemble's registrations draw theirs log-uniformly within half a decade of the preset's on either side.
W_REG_SPAN = 10**0.5


@dataclasses.dataclass(frozen=True)
class EnsembleRegistrationCheck:
    """One more registration of a dose-uncertainty ensemble: its liver Dice, folding, spring weight and, when it was
    guided by a random half of the landmarks, the mean mass-centre distance of the others."""

    liver_dice: float | None
    folding_fraction: float  # fraction of voxels with det J <= 0
    w_reg: float
    held_out_landmarks: tuple[int, ...] = ()
    held_out_landmark_mcd_mm: float | None = None  # None when no landmark was held out

    def to_json(self) -> dict:
        """The check as report.json holds it (the held-out keys only when landmarks were held out)."""
        held_out = {"held_out_landmarks": list(self.held_out_landmarks),
                    "held_out_landmark_mcd_mm": self.held_out_landmark_mcd_mm} if self.held_out_landmarks else {}
        return {"liver_dice": self.liver_dice, "folding_fraction": self.folding_fraction, "w_reg": self.w_reg, **held_out}


def uncertainty_json(summary: dict) -> dict:
    """A :func:`dose_uncertainty` summary as report.json holds it: its registration checks as JSON."""
    return {**summary, "registration_checks": [c.to_json() for c in summary["registration_checks"]]}


_SPANS = Program(lambda key, n: jax.random.uniform(key, (n,), minval=-1.0), "uncertainty registration spans",
                 static_argnums=(1,))
_PERMUTED = Program(jax.random.permutation, "uncertainty landmark permutation")


def dose_uncertainty(session: Session, diagnostics: Sequence[Anatomy], vois: SessionVois,
                     registrations: Sequence[Registered], activity: float | None, lsf: float, options: WorkflowOptions,
                     key: jax.Array, target: tuple[str, float] | None = None) -> tuple[dict, list[ResultWarning]]:
    """The summary of a session's dose-uncertainty ensemble (WorkflowOptions.uncertainty), and its registrations' warnings.

    activity None: the session's emission is a 90Y PET in Bq/ml (verification), else SPECT counts scaled to
    ``activity`` GBq (plan). With lesions mapped by registration, ``registrations`` more registrations of the
    mapping's source image, each with other sampling keys and a spring weight drawn within :data:`W_REG_SPAN` of
    its preset's, give the lesion maps of its registration source; their checks (:class:`EnsembleRegistrationCheck`)
    go into the summary (:func:`uncertainty_json` gives its report.json form). Where the mapping was guided by
    landmarks, each of them is guided by a random half of the landmarks (at least one) and scored on the others
    (``held_out_landmark_mcd_mm``): the landmark error of a registration that did not see them.
    ``target`` (VOI name, mean dose Gy): the prescription's dose target, whose activity interval the summary then
    holds (:func:`~sirtjax.dosimetry.uncertainty.activity_for_target`). Keys of its own: the workflow's
    registrations draw as they did without it.
    """
    request = options.uncertainty
    alternatives, checks, warnings = [], [], []
    if vois.sources["lesions"].startswith("mapped from"):  # by the first registration (lesions_of)
        mapped = registrations[0]
        source = next(d for d in diagnostics if d.name == mapped.source)
        if source.liver is None and options.segmenter is not None and request.registrations:
            source = dataclasses.replace(source, liver=liver_of(source, options)[0])  # segmented once, not per registration
        w_reg0 = PRESETS[mapped.preset].main_stage.w_reg if options.registration.w_reg is None else options.registration.w_reg
        programs = options.programs
        spans = np.asarray(_SPANS(keys.fold_in(key, 999, programs), request.registrations, programs=programs))
        landmarks = mapped.checks.landmarks
        for k in range(request.registrations):
            w_reg = w_reg0 * W_REG_SPAN ** float(spans[k])
            drawn = dataclasses.replace(options, registration=dataclasses.replace(options.registration, w_reg=w_reg))
            held_out = sorted(np.asarray(_PERMUTED(keys.fold_in(key, 2000 + k, programs), np.asarray(landmarks), programs=programs))
                              [: len(landmarks) // 2].tolist()) if len(landmarks) >= 2 else []
            again = register_anatomy(without_landmarks(session.anatomy, held_out), without_landmarks(source, held_out),
                                     target_liver=vois.liver, options=drawn, key=keys.fold_in(key, 1000 + k, programs))
            alternatives.append(again.lesions)
            error_mm = landmark_error_mm(session.anatomy.labels, source.labels, again.result.displacement,
                                         held_out, options.programs) if held_out else None
            checks.append(EnsembleRegistrationCheck(again.checks.liver_dice, again.checks.jacobian.fraction_nonpositive,
                                                    w_reg, tuple(held_out), error_mm))
            warnings += [dataclasses.replace(w, message=f"uncertainty registration {k + 1}: {w.message}")
                         for w in again.warnings]
    e = ensemble(session.emission, vois.liver, vois.lesions, activity_gbq=activity, lung_shunt_fraction=lsf,
                 model=request.stated, key=keys.fold_in(key, 1, options.programs), n=request.members,
                 dose_model=options.dose_model, constants=options.constants, lesion_alternatives=alternatives,
                 programs=options.programs)
    needed = {} if target is None or activity is None else {"activity_for_target": activity_for_target(e, *target, activity)}
    return {"members": request.members, "emission": "counts" if activity is not None else "bq-per-ml",
            "registrations": len(alternatives), "registration_checks": tuple(checks), "stated": request.stated,
            "vois": summarise(e), **needed}, warnings


def plan(session: Session, diagnostics: Sequence[Anatomy], study: StudyData,
         options: WorkflowOptions = WorkflowOptions(), *, key: jax.Array, progress=None) -> PlanResult:
    """Plan a SIRT treatment from a MAA SPECT (counts) / CT session and diagnostic CT/MR images.

    Args:
      session: MAA CT with its given masks and the MAA SPECT (counts, same world frame).
      diagnostics: diagnostic CT/MR images with their given masks (lesions, liver, labels).
      study: patient, activities, target doses and the planar LSF if known.
      options: dose model, constants, registration overrides, segmenter, prescription method.
      key: PRNG key for the registrations' random MI sampling.
      progress: optional callback(label, iteration, max_iterations) of the registrations.

    Returns:
      A :class:`PlanResult`. Raises ValueError (or DoseInputError) on unusable inputs: no liver,
      empty VOIs on the SPECT grid, a planned activity from a prescription that is impossible.
    """
    vois, registrations = session_vois(session, diagnostics, options, key=key, progress=progress)
    spect = session.emission
    measured = measure_compartments(spect, vois.liver_emission, lesions=vois.lesions_emission, lungs=vois.lungs_emission)
    shunt = choose_lung_shunt(study.lung_shunt_fraction, study.lung_shunt_source, measured.lung_shunt_fraction,
                              lungs_cut=measured.lung_shunt_fraction is not None and cut_by_field_of_view(vois.lungs))
    lsf, lsf_source, warnings = shunt.fraction, shunt.source, list(shunt.warnings)
    normal_ml, tumour_ml = ct_volumes_ml(vois, measured.tumour_ids)
    prescriptions, targets = prescribe(study, normal_ml, tumour_ml, measured.tn_ratios, measured.tumour_names, lsf,
                                       options.constants)
    if "y90_planned_gbq" in study.activities:
        activity, activity_source = float(study.activities["y90_planned_gbq"]), "planned activity of the study"
    else:
        chosen = next(p for p in prescriptions if p.method == options.prescription_method)
        activity, activity_source = chosen.activity_gbq, f"{chosen.method} prescription"
    # A lung mask cut by the CT's field of view holds a fraction of the lungs: its volume is no lung
    # mass (a sliver gave 0.1 g and a 90 kGy "lung dose"), so the lung dose then uses the conventional 1 kg.
    cut = vois.lungs is not None and cut_by_field_of_view(vois.lungs)
    sources = {**vois.sources, "lungs": vois.sources["lungs"] + (
        ", cut by the CT field of view: used for the LSF only (lung dose with the conventional 1 kg)" if cut else "")}
    dose = voxel_dosimetry(spect, vois.liver_emission, lesions=vois.lesions_emission,
                           lungs=None if cut else vois.lungs_emission, activity_gbq=activity, lung_shunt_fraction=lsf,
                           model=options.dose_model, constants=options.constants, programs=options.programs)
    uncertainty = None
    if options.uncertainty is not None:
        target = {"partition": ("normal_liver", targets["normal_liver"]["dose_gy"]),
                  "mono-compartment": ("liver", targets["whole_liver"]["dose_gy"])}.get(options.prescription_method)
        uncertainty, ensemble_warnings = dose_uncertainty(session, diagnostics, vois, registrations, activity, lsf,
                                                          options, key, target)
        warnings += ensemble_warnings
    bed = None
    if options.radiobiology is not None:
        bed = workflow_radiobiology(dose.dose, vois.liver_emission, vois.lesions_emission, options.radiobiology)
    warnings += session_warnings(vois, registrations, session)
    all_warnings = tuple(warnings) + tuple(w for p in prescriptions for w in p.warnings)
    all_warnings += dose.warnings
    report = {
        "workflow": "plan",
        "study": study.name,
        "session": {"anatomical": session.anatomy.name, "emission": session.emission_name},
        "vois": sources,
        **({"lesions_found": vois.lesions_found} if vois.lesions_found else {}),
        "registrations": [r.checks.to_json() for r in registrations],
        "compartments": {**measured.to_dict(), "normal_volume_ml_ct": normal_ml,
                         "tumour_volume_ml_ct": tumour_ml.tolist()},
        "lung_shunt": {"fraction": lsf, "source": lsf_source, "from_spect": measured.lung_shunt_fraction},
        "target_doses": targets,
        "prescriptions": [p.to_dict() for p in prescriptions],
        "planned_activity": {"gbq": activity, "source": activity_source},
        "dose": dose.report,
        **({} if uncertainty is None else {"uncertainty": uncertainty_json(uncertainty)}),
        **({} if bed is None else {"radiobiology": radiobiology_report(bed, options.radiobiology)}),
        "warnings": [w.to_dict() for w in all_warnings],
    }
    return PlanResult(session, vois, tuple(registrations), measured, lsf, tuple(prescriptions), activity, activity_source,
                      dose, all_warnings, report, uncertainty, bed)
