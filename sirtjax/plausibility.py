"""Results a user must look at: one typed warning, and the checks that find implausible results.

Every command prints these as ``warning: <message>`` and records them in its ``report.json`` under
``warnings`` (code, message, value, limit), so that the console and the file say the same.
"""

from __future__ import annotations

import dataclasses

PLAUSIBLE_LIVER_ML = (600.0, 4500.0)  # adult livers, from very small to very large (hepatomegaly)
FOLDING_LIMIT = 0.01  # fraction of the liver where det J <= 0 that makes a registration suspect
IMPLAUSIBLE_DOSE_GY = 1000.0  # far above any SIRT tumour dose: a maximum beyond it points to a wrong input


@dataclasses.dataclass(frozen=True)
class ResultWarning:
    """A condition the user must see: a machine-readable code, a sentence, the value and the limit."""

    code: str
    message: str
    value: float | None = None
    limit: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def above(code: str, message: str, value: float, limit: float) -> list[ResultWarning]:
    """[ResultWarning(code, message, value, limit)] when value > limit, else []."""
    return [ResultWarning(code, message, float(value), float(limit))] if value > limit else []


def check_dose_maximum(max_dose_gy: float, limit_gy: float = IMPLAUSIBLE_DOSE_GY) -> list[ResultWarning]:
    """A warning when the dose maximum exceeds limit_gy (1000 Gy): far above any SIRT dose, so an input is likely wrong."""
    return above("dose_maximum_implausible", f"dose maximum {max_dose_gy:.0f} Gy exceeds {limit_gy:g} Gy: check the "
                 "administered activity, the calibration and the masks", max_dose_gy, limit_gy)


def check_resampled(name: str, note: dict, grid_name: str = "activity") -> list[ResultWarning]:
    """A warning naming a mask that was resampled from another grid, with its volume before and after."""
    if not note["resampled_nearest"]:
        return []
    before, after = note["volume_ml_input"], note["volume_ml_on_grid"]
    return [ResultWarning("mask_resampled", f"the {name} mask is on another grid ({note['input_grid']}): resampled "
                          f"(nearest neighbour) onto the {grid_name} grid, {before:.1f} -> {after:.1f} ml", after, before)]


def check_folding(fraction_nonpositive: float, where: str = "the fixed liver",
                  limit: float = FOLDING_LIMIT) -> list[ResultWarning]:
    """A warning when a registration's Jacobian folds (det J <= 0) more than limit (1 %) of a region."""
    return above("registration_folding", f"the registration folds (det J <= 0) {100 * fraction_nonpositive:.1f} % of "
                 f"{where}, above {100 * limit:g} %: check the alignment before using it", fraction_nonpositive, limit)


def check_liver_volume(volume_ml: float, what: str = "liver") -> list[ResultWarning]:
    """A warning when a liver volume lies outside PLAUSIBLE_LIVER_ML (0.6-4.5 L)."""
    lo, hi = PLAUSIBLE_LIVER_ML
    if lo <= volume_ml <= hi:
        return []
    return [ResultWarning("liver_volume_implausible", f"implausible {what} volume {volume_ml:.0f} ml (expected "
                          f"{lo:.0f}-{hi:.0f} ml): check the image, its modality and the mask", volume_ml,
                          lo if volume_ml < lo else hi)]
