"""The settings of a registration: :class:`RegistrationConfig` and its JSON form.

Presets (named settings) are in :mod:`sirtjax.registration.presets`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sirtjax.registration.nonrigid import Weights
from sirtjax.registration.optimise import check_optimiser
from sirtjax.registration.terms import SimilarityOptions, check_samples


@dataclasses.dataclass(frozen=True)
class RegistrationConfig:
    """Static settings of a registration (hashable; changing one recompiles).

    Defaults follow the thesis and ITK/elastix practice rather than any data set: 3 levels, 32 MI
    bins, spring model with 26 neighbours, Adam steps of a fraction of the level resolution.
    """

    levels: int = 3
    finest_mm: float | None = 6.0  # finest level (mm), never below the fixed spacing; None = the fixed spacing
    metric: str = "mi"
    bins: int = 32
    fixed_parzen_order: int = 0
    samples: int | None = 16384  # random fixed voxels per step for every similarity term on larger grids; None = all
    roi_margin_mm: float | None = 30.0  # similarity terms within the fixed segmentation grown by this margin; None = everywhere
    optimiser: str = "adam"  # or "lbfgs" (optimise.transformation), every stage
    affine_on: str = "images"  # or "segmentation" (the thesis' CNN-based affine)
    affine_iterations: int = 100
    affine_step: float = 0.1  # Adam step in units of the level resolution (mm / mm)
    candidates: int = 5
    # |E|_F of the affine's Green-Lagrange strain past which a barrier acts (affine.strain_excess); None = no limit.
    # For a whole-image MI affine: one patient's body maps nearly rigidly. An affine fitted to segmentations
    # follows the organ's own deformation and may strain more (3 mm seed 4 MR label maps: 0.17, and 2.5 mm RMSD
    # with the barrier against 0.56 mm without), so the guided presets leave it free
    affine_max_strain: float | None = 0.15
    nonrigid_levels: int = 3  # 0 = affine only
    nonrigid_iterations: int = 60
    nonrigid_step: float = 0.15  # larger steps, fewer of them: as accurate as 100 x 0.1 on 4 seeds, 40 % less time
    nonrigid_image: bool = True  # use the image term in the non-rigid stage
    field_spacing_mm: float = 0.0  # non-rigid field nodes at least this far apart (every k-th voxel of finer levels); 0 = every voxel
    field_order: int = 1  # between the nodes: 1 trilinear, 3 cubic B-spline (coefficients at the nodes; meant for coarse node grids)
    image_field_mm: float = 0.0  # > 0: first a non-rigid stage on the images alone (MI, whole grid), field nodes this far apart
    image_field_levels: int = 3  # that stage runs on the finest this many pyramid levels ...
    image_field_iterations: int = 200  # ... this many steps a level (no early stop) ...
    image_field_samples: int = 4096  # ... each on this many random voxels
    image_field_w_reg: float = 10.0  # ... and this spring weight (w_reg of that stage)
    regulariser: str = "spring"
    neighbourhood: int = 26
    liver_stiffness: float = 1.0  # stiffness inside the fixed liver relative to outside (thesis 6.5)
    fold_weight: float = 0.0  # folding barrier (det J < 0.1) relative to the spring energy; 0 = none
    window: int = 10  # a level stops when the mean loss of its last `window` steps ...
    rel_tol: float = 3e-3  # ... improved on the previous window's by less than rel_tol * |mean|
    min_iterations: int = 20
    w_image: float = 1.0
    w_seg: float = 1.0
    w_reg: float = 10.0  # a 10 % strain everywhere costs as much as 0.1 nats of MI or 0.1 of 1 - Dice

    def __post_init__(self):
        check_optimiser(self.optimiser)
        check_samples(self.samples)
        check_samples(self.image_field_samples)

    def similarity(self) -> SimilarityOptions:
        """The similarity options part of the config."""
        return SimilarityOptions(self.metric, self.bins, self.fixed_parzen_order, self.samples)

    def weights(self) -> Weights:
        """The default loss weights as scalars (host)."""
        return Weights(np.float32(self.w_image), np.float32(self.w_seg), np.float32(self.w_reg))


def config_from_dict(values: dict) -> RegistrationConfig:
    """RegistrationConfig from a dict of its fields (JSON); missing fields keep the defaults.

    Raises ValueError naming any unknown field, a value of the wrong type or a sample count out of range.
    """
    fields = {f.name: f for f in dataclasses.fields(RegistrationConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"unknown registration setting(s): {', '.join(unknown)}")
    for name, value in values.items():
        default = getattr(RegistrationConfig, name)
        ok = (value is None and "None" in str(fields[name].type)) or isinstance(value, type(default)) or (
            isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)) or (
            default is None and isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            raise ValueError(f"registration setting {name} = {value!r} has the wrong type")
    return RegistrationConfig(**{k: (float(v) if v is not None and isinstance(getattr(RegistrationConfig, k), float) else v)
                                 for k, v in values.items()})
