"""Read a study manifest's series and given masks into workflow inputs (the I/O edge of the pipelines)."""

from __future__ import annotations

from sirtjax.errors import InputError
from sirtjax.pipelines.inputs import Anatomy, Session, StudyData
from sirtjax.study import StudyManifest
from sirtjax.volume import describe_grid

_EMISSION_ROLE = {"maa": "spect", "y90": "pet"}


def read_anatomy(study: StudyManifest, series: str) -> Anatomy:
    """Read an anatomical series (CT/MR) and its given masks; InputError when a mask is off the image grid."""
    image = study.read(series)
    masks = {kind: study.read_mask(series, kind) for kind in ("liver", "lesions", "lungs", "labels")}
    for kind, mask in masks.items():
        if mask is not None and tuple(mask.shape) != tuple(image.shape):
            raise InputError(study.mask_path(series, kind), f"not on the grid of {series} "
                             f"({describe_grid(mask)} vs {describe_grid(image)})")
    return Anatomy(series, study.series[series].modality, image, **masks)


def read_session(study: StudyManifest, session: str) -> Session:
    """The 'maa' (CT + SPECT) or 'y90' (CT or MR + PET) session; InputError naming what is missing."""
    emission = study.session_series(session, _EMISSION_ROLE[session])
    anatomical = study.session_series(session, "ct") or study.session_series(session, "mr")
    if emission is None or anatomical is None:
        role = _EMISSION_ROLE[session].upper()
        raise InputError(study.path, f"session '{session}' needs a {role} and its CT or MR series")
    linked = study.series[emission].anatomical
    if linked is not None and linked in study.series and study.series[linked].session == session:
        anatomical = linked
    return Session(read_anatomy(study, anatomical), study.read(emission), emission)


def read_diagnostics(study: StudyManifest) -> tuple[Anatomy, ...]:
    """The diagnostic CT and MR (in that order) with their given masks; () when the study has none."""
    names = [study.session_series("diagnostic", role) for role in ("ct", "mr")]
    return tuple(read_anatomy(study, n) for n in names if n is not None)


def study_data(study: StudyManifest, lung_shunt_fraction: float | None = None) -> StudyData:
    """Patient, activities and target doses of a manifest, with the planar LSF when known."""
    return StudyData(study.name, dict(study.patient), dict(study.activities), dict(study.target_doses_gy),
                     lung_shunt_fraction)
