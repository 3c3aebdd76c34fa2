"""The settings of a registration: a typed tree (:class:`RegistrationConfig`), its JSON form, and :class:`Overrides`.

A registration is a pyramid, a similarity, a regulariser, an affine stage and a list of non-rigid stages. Presets
(named settings) are in :mod:`sirtjax.registration.presets`; why each value is what it is:
benchmarks/registration/PRESETS.md.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import numpy as np

from sirtjax.registration.nonrigid import RegulariserOptions, Weights
from sirtjax.registration.optimise import Convergence
from sirtjax.registration.optimisers import check_optimiser
from sirtjax.registration.terms import SimilarityOptions, check_samples


@dataclasses.dataclass(frozen=True)
class Pyramid:
    """Resolution levels: ``levels`` of them, each twice the next's spacing, the finest ``finest_mm`` (never below the
    fixed image's coarsest spacing; None = that spacing)."""

    levels: int = 3
    finest_mm: float | None = 6.0


@dataclasses.dataclass(frozen=True)
class Similarity:
    """The similarity terms: metric 'mi' or 'ssd', MI bins and the fixed image's Parzen order; the stages on the
    pair's own levels evaluate them within the fixed segmentation grown by ``roi_margin_mm`` (None: everywhere)."""

    metric: str = "mi"
    bins: int = 32
    fixed_parzen_order: int = 0
    roi_margin_mm: float | None = 30.0

    def options(self, samples: int | None) -> SimilarityOptions:
        """The static similarity options of a stage that draws ``samples`` random voxels a step."""
        return SimilarityOptions(self.metric, self.bins, self.fixed_parzen_order, samples)


@dataclasses.dataclass(frozen=True)
class Regulariser:
    """The non-rigid field's regulariser ('spring' with 6 or 26 neighbours, 'diffusion', 'bending') and the stiffness
    inside the fixed liver relative to outside (thesis 6.5)."""

    kind: str = "spring"
    neighbourhood: int = 26
    liver_stiffness: float = 1.0


@dataclasses.dataclass(frozen=True)
class EarlyStop:
    """A level stops when the mean loss of its last ``window`` steps improved on the previous window's by less than
    ``rel_tol`` times its magnitude, after at least ``min_iterations`` steps (:class:`optimise.Convergence`)."""

    window: int = 10
    rel_tol: float = 3e-3
    min_iterations: int = 20


@dataclasses.dataclass(frozen=True)
class AffineStage:
    """The affine stage on every level: fitted to the 'images' or the 'segmentation' channels, Adam steps of ``step``
    times the level's resolution, ``candidates`` start translations, ``samples`` random voxels a step (None: all).

    ``max_strain``: |E|_F of the affine's Green-Lagrange strain past which a barrier acts (:func:`affine.strain_excess`;
    None: no limit). One patient's body maps nearly rigidly under a whole-image MI affine; an affine fitted to
    segmentations follows the organ's own deformation and may strain more (3 mm seed 4 MR label maps: 0.17, and 2.5 mm
    RMSD with the barrier against 0.56 mm without), so the guided presets leave it free.
    """

    on: str = "images"
    iterations: int = 100
    step: float = 0.1
    candidates: int = 5
    max_strain: float | None = 0.15
    samples: int | None = 16384

    def __post_init__(self):
        check_samples(self.samples)


@dataclasses.dataclass(frozen=True)
class NonrigidStage:
    """One non-rigid stage on the finest ``levels`` pyramid levels, adding its field to the earlier stages'.

    ``images_only``: the stage sees the images alone on their whole grids (no masks or label maps, no region of
    interest); else the pair's own levels, guidance included. ``image_term``: the image similarity is in the
    objective. The field's nodes are at least ``field_spacing_mm`` apart (every k-th voxel of a level; 0: every
    voxel), ``field_order`` 1 trilinear between them or 3 a cubic B-spline (first stage only). Adam steps of ``step``
    times the level's resolution, ``iterations`` a level, stopped early unless ``early_stop`` is False;
    ``samples`` random voxels a step (None: all); the folding barrier weighs ``fold_weight`` against the springs.
    """

    levels: int = 3
    iterations: int = 60
    step: float = 0.15
    images_only: bool = False
    image_term: bool = True
    field_spacing_mm: float = 0.0
    field_order: int = 1
    samples: int | None = 16384
    early_stop: bool = True
    fold_weight: float = 0.0
    w_image: float = 1.0
    w_seg: float = 1.0
    w_reg: float = 10.0  # a 10 % strain everywhere costs as much as 0.1 nats of MI or 0.1 of 1 - Dice

    def __post_init__(self):
        check_samples(self.samples)
        if self.field_order not in (1, 3):
            raise ValueError(f"field_order must be 1 or 3, got {self.field_order}")

    def weights(self) -> Weights:
        """The stage's loss weights as scalars (host)."""
        return Weights(np.float32(self.w_image), np.float32(self.w_seg), np.float32(self.w_reg))

    def convergence(self, early_stop: EarlyStop) -> Convergence:
        """The stopping rule of each of its levels."""
        minimum = early_stop.min_iterations if self.early_stop else self.iterations
        return Convergence(self.iterations, early_stop.window, early_stop.rel_tol, minimum)


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    """Static settings of a registration (hashable; changing one recompiles): the affine stage, then each of
    ``stages`` in turn (none: affine only), every stage with ``optimiser`` ('adam' or 'lbfgs').

    Defaults follow the thesis and ITK/elastix practice rather than any data set: 3 levels, 32 MI bins, spring model
    with 26 neighbours, Adam steps of a fraction of the level resolution.
    """

    pyramid: Pyramid = Pyramid()
    similarity: Similarity = Similarity()
    regulariser: Regulariser = Regulariser()
    affine: AffineStage = AffineStage()
    stages: tuple[NonrigidStage, ...] = (NonrigidStage(),)
    early_stop: EarlyStop = EarlyStop()
    optimiser: str = "adam"

    def __post_init__(self):
        check_optimiser(self.optimiser)
        if any(s.field_order == 3 for s in self.stages[1:]):
            raise ValueError("field_order 3 (a B-spline) is for the first non-rigid stage only")

    def regulariser_options(self, stage: NonrigidStage) -> RegulariserOptions:
        """The static regulariser options of a stage."""
        return RegulariserOptions(self.regulariser.kind, self.regulariser.neighbourhood, stage.fold_weight)

    @property
    def main_stage(self) -> NonrigidStage | None:
        """The last stage on the pair's own levels (the one whose weights :func:`register_batch` may replace), or None."""
        return next((s for s in reversed(self.stages) if not s.images_only), None)


@dataclasses.dataclass(frozen=True)
class Overrides:
    """What a user changes in a preset (the command line's options, a workflow's quick run); None keeps the preset's.

    ``iterations`` sets the affine's and the guided stages' (those on the pair's own levels); ``w_image``, ``w_seg``,
    ``w_reg`` and ``nonrigid_levels`` set the guided stages' (a positive ``w_image`` switches their image term on,
    0 off; ``nonrigid_levels`` 0 leaves the affine alone); ``image_stages`` False drops the images-only stages.
    """

    metric: str | None = None
    levels: int | None = None
    finest_mm: float | None = None
    iterations: int | None = None
    nonrigid_levels: int | None = None
    image_stages: bool | None = None
    w_image: float | None = None
    w_seg: float | None = None
    w_reg: float | None = None
    liver_stiffness: float | None = None

    def given(self) -> dict[str, object]:
        """The fields that change something, by name (for reports)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def apply(self, config: RegistrationConfig) -> RegistrationConfig:
        """``config`` with these overrides."""
        def pick(value, default):
            return default if value is None else value

        guided = {k: v for k, v in (("iterations", self.iterations), ("levels", self.nonrigid_levels),
                                    ("w_image", self.w_image), ("w_seg", self.w_seg), ("w_reg", self.w_reg),
                                    ("image_term", None if self.w_image is None else self.w_image > 0)) if v is not None}
        stages = tuple(s if s.images_only else dataclasses.replace(s, **guided) for s in config.stages
                       if not (s.images_only and self.image_stages is False))
        return dataclasses.replace(
            config,
            pyramid=Pyramid(pick(self.levels, config.pyramid.levels), pick(self.finest_mm, config.pyramid.finest_mm)),
            similarity=dataclasses.replace(config.similarity, metric=pick(self.metric, config.similarity.metric)),
            regulariser=dataclasses.replace(config.regulariser,
                                            liver_stiffness=pick(self.liver_stiffness, config.regulariser.liver_stiffness)),
            affine=dataclasses.replace(config.affine, iterations=pick(self.iterations, config.affine.iterations)),
            stages=() if self.nonrigid_levels == 0 else stages)


def config_from_dict(values: dict) -> RegistrationConfig:
    """RegistrationConfig from its JSON form (nested objects as :func:`dataclasses.asdict` writes them, ``stages`` a
    list); missing fields keep the defaults (a stage's: :class:`NonrigidStage`'s).

    Raises ValueError naming any unknown field, a value of the wrong type or one out of range.
    """
    return _from_json(RegistrationConfig, values, "")


def _from_json(tp, value, where: str):
    """``value`` (parsed JSON) as type ``tp``: a settings dataclass, a tuple of them, an optional or a scalar."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        if value is None and type(None) in typing.get_args(tp):
            return None
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, list):
            raise ValueError(f"registration setting {where} must be a list")
        return tuple(_from_json(typing.get_args(tp)[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"registration setting {where or 'file'} must be a JSON object")
        hints = typing.get_type_hints(tp)
        unknown = sorted(set(value) - set(hints))
        if unknown:
            layout = "" if where else f" (the settings are nested: {', '.join(hints)}; see configs/registration/)"
            raise ValueError(f"unknown registration setting(s): {', '.join(where + '.' * bool(where) + u for u in unknown)}"
                             + layout)
        return tp(**{k: _from_json(hints[k], v, where + "." * bool(where) + k) for k, v in value.items()})
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
        return value
    raise ValueError(f"registration setting {where} = {value!r} has the wrong type (expected {tp.__name__})")
