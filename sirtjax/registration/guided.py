"""register() as the command line and the workflows call it: the preset chosen from the guidance at hand, the
guidance passed as that preset needs it, and the checks every caller reports (Jacobian statistics, folding)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sirtjax.buckets import fine_bucket, pad_to
from sirtjax.metrics import JacobianStats, determinant_stats, jacobian_determinant
from sirtjax.plausibility import ResultWarning, check_folding
from sirtjax.programs import Program, ProgramCache
from sirtjax.registration.api import RegistrationResult, register_batch
from sirtjax.registration.config import Overrides, RegistrationConfig
from sirtjax.registration.levels import make_pair
from sirtjax.registration.optimise import Progress
from sirtjax.registration.padding import valid_mask
from sirtjax.registration.presets import PRESETS
from sirtjax.timing import timed
from sirtjax.volume import Volume

# the guidance register() gets under each preset (Guidance field names)
PRESET_GUIDANCE: dict[str, tuple[str, ...]] = {
    "cnn-lm-guided": ("fixed_labels", "moving_labels"),
    "cnn-guided": ("fixed_mask", "moving_mask"),
    "image-based": (),
}


def check_guidance(preset: str, given: Iterable[str]) -> None:
    """Raises ValueError naming (as command-line flags) the guidance that ``preset`` needs and ``given`` lacks."""
    given = set(given)
    missing = [name for name in PRESET_GUIDANCE[preset] if name not in given]
    if missing:
        raise ValueError(f"the {preset} preset needs {' and '.join('--' + n.replace('_', '-') for n in missing)}")


@dataclasses.dataclass(frozen=True)
class Guidance:
    """What guides a registration: liver masks (0/1) and/or label maps (liver 1, landmarks >= 2), each on its image's grid."""

    fixed_mask: Volume | None = None
    moving_mask: Volume | None = None
    fixed_labels: Volume | None = None
    moving_labels: Volume | None = None

    @property
    def has_masks(self) -> bool:
        """Liver masks on both images."""
        return self.fixed_mask is not None and self.moving_mask is not None

    @property
    def has_labels(self) -> bool:
        """Label maps on both images."""
        return self.fixed_labels is not None and self.moving_labels is not None

    def for_preset(self, preset: str) -> dict[str, Volume]:
        """register()'s guidance arguments for a preset: label maps (cnn-lm-guided), masks (cnn-guided) or none.

        Raises ValueError when the preset needs guidance that is missing.
        """
        check_guidance(preset, [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None])
        return {name: getattr(self, name) for name in PRESET_GUIDANCE[preset]}

    def fixed_liver(self) -> np.ndarray | None:
        """The fixed liver (bool, fixed grid): the mask, else label 1 of the label map; None without either."""
        if self.fixed_mask is not None:
            return np.asarray(self.fixed_mask.array) != 0
        return None if self.fixed_labels is None else np.asarray(self.fixed_labels.array) == 1


def choose_preset(*, masks: bool, labels: bool) -> str:
    """'cnn-lm-guided' with label maps (of shared landmarks) on both images, else 'cnn-guided' with liver masks
    on both, else 'image-based'."""
    return "cnn-lm-guided" if labels else "cnn-guided" if masks else "image-based"


@dataclasses.dataclass(frozen=True)
class CheckedRegistration:
    """A registration with its preset and settings, its Jacobian statistics (whole grid and fixed liver) and
    the implausibility warnings (folding of the fixed liver above 1 %)."""

    preset: str
    config: RegistrationConfig
    result: RegistrationResult
    jacobian: dict
    jacobian_liver: dict | None
    warnings: tuple[ResultWarning, ...]


def register_checked(
    fixed: Volume,
    moving: Volume,
    guidance: Guidance = Guidance(),
    *,
    preset: str | None = None,
    config: RegistrationConfig | None = None,
    overrides: Overrides = Overrides(),
    key: jax.Array,
    progress: Progress | None = None,
    liver_name: str = "the fixed liver",
    programs: ProgramCache | None = None,
) -> CheckedRegistration:
    """Register moving onto fixed with ``preset`` (default :func:`choose_preset`) and check the result.

    ``config`` replaces the preset's settings; ``overrides`` change either.
    ``programs``: the compiled programs' cache (:class:`~sirtjax.programs.ProgramCache`), or None.
    Raises ValueError for an unknown preset or one whose guidance is missing.
    """
    preset = choose_preset(masks=guidance.has_masks, labels=guidance.has_labels) if preset is None else preset
    return register_checked_batch([(fixed, moving, guidance)], preset=preset, config=config, overrides=overrides,
                                  key=key, progress=progress, liver_name=liver_name, programs=programs)[0]


def register_checked_batch(
    cases: Sequence[tuple[Volume, Volume, Guidance]],
    *,
    preset: str,
    config: RegistrationConfig | None = None,
    overrides: Overrides = Overrides(),
    key: jax.Array,
    progress: Progress | None = None,
    liver_name: str = "the fixed liver",
    programs: ProgramCache | None = None,
    sharding: jax.sharding.Sharding | None = None,
) -> list[CheckedRegistration]:
    """:func:`register_checked` of (fixed, moving, guidance) cases with one preset, in one :func:`register_batch`
    (``sharding``: where the batch lives, as there). Raises ValueError for an unknown preset or missing guidance."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}' (use {', '.join(PRESETS)})")
    settings = overrides.apply(PRESETS[preset] if config is None else config)
    pairs = [make_pair(fixed, moving, **guidance.for_preset(preset)) for fixed, moving, guidance in cases]
    for fixed, _, _ in cases:
        expect_checks(fixed, programs)
    results = register_batch(pairs, settings, key=key, progress=progress, programs=programs, sharding=sharding)
    checked = []
    for (_, _, guidance), result in zip(cases, results):
        liver = guidance.fixed_liver()
        with timed(result.diagnostics["seconds"], "checks"):
            jac, jac_liver = jacobian_checks(result.displacement, liver, programs)
        warnings = () if jac_liver is None else tuple(check_folding(jac_liver["fraction_nonpositive"], liver_name))
        checked.append(CheckedRegistration(preset, settings, result, jac, jac_liver, warnings))
    return checked


def jacobian_checks(field: Volume, liver: np.ndarray | None, programs: ProgramCache | None = None) -> tuple[dict, dict | None]:
    """:func:`~sirtjax.metrics.jacobian_stats` of a displacement field over all voxels and over a (z, y, x) liver mask
    (None: not computed), in one program of the field's :func:`~sirtjax.buckets.fine_bucket` shape: at
    most an eighth more voxels per axis (a power-of-2 bucket held up to 2.7 times a 1.5 mm CT's voxels, and the
    checks' time with them); :func:`expect_checks` has the program compiled meanwhile where it is new."""
    shape = fine_bucket(field.shape)
    arr = pad_to(np.asarray(field.array, np.float32), shape)
    mask = pad_to(np.zeros(field.shape, np.float32) if liver is None else (np.asarray(liver) != 0).astype(np.float32), shape)
    whole, in_liver = _jacobian_checks(Volume(arr, field.spacing_mm, field.origin_mm, field.direction),
                                       np.asarray(field.shape, np.int32), mask, programs=programs)
    as_dict = lambda stats: JacobianStats(**stats).to_dict()
    return as_dict(whole), None if liver is None else as_dict(in_liver)


def expect_checks(fixed: Volume, programs: ProgramCache | None) -> None:
    """Have ``programs`` load or compile ahead, in the background, the :func:`jacobian_checks` program of a field on
    ``fixed``'s grid (nothing without ``programs``)."""
    if programs is None:
        return
    shape = tuple(int(n) for n in fine_bucket(fixed.shape))
    field = Volume(jax.ShapeDtypeStruct(shape + (3,), jnp.float32), fixed.spacing_mm, fixed.origin_mm, fixed.direction)
    programs.expect(_jacobian_checks, (field, jax.ShapeDtypeStruct((3,), jnp.int32), jax.ShapeDtypeStruct(shape, jnp.float32)))


def _field_checks(field: Volume, valid_zyx: jax.Array, liver: jax.Array) -> tuple[dict, dict]:
    """Jacobian statistics (as dicts of arrays) over the valid voxels and over the liver of a field padded past
    ``valid_zyx`` (the determinants at the valid border are those of the unpadded field: one-sided differences)."""
    det = jacobian_determinant(field, valid_zyx)
    valid = valid_mask(field.array.shape[:3], valid_zyx)
    return determinant_stats(det, valid)._asdict(), determinant_stats(det, valid * liver)._asdict()


_jacobian_checks = Program(_field_checks, "jacobian checks")
