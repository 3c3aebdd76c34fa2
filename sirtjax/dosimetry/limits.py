"""Safety limits as structured warnings (code, message, value, limit) that reports and the CLI print."""

from __future__ import annotations

from sirtjax.plausibility import ResultWarning, above

LUNG_DOSE_LIMIT_GY = 30.0  # per treatment (thesis 1.5.3.1: about 30 Gy to 1 kg of lung)
LUNG_SHUNT_LIMIT = 0.20  # above 20 % shunting, treatment is usually contraindicated


def check_lung_dose(lung_dose_gy: float, limit_gy: float = LUNG_DOSE_LIMIT_GY) -> list[ResultWarning]:
    """A warning when the lung dose of one treatment exceeds limit_gy (30 Gy), else none."""
    return above("lung_dose_above_limit", f"lung dose {lung_dose_gy:.1f} Gy exceeds {limit_gy:g} Gy per treatment",
                 lung_dose_gy, limit_gy)


def check_lung_shunt(lsf: float, limit: float = LUNG_SHUNT_LIMIT) -> list[ResultWarning]:
    """A warning when the lung shunt fraction exceeds limit (20 %), else none."""
    return above("lung_shunt_above_limit", f"lung shunt fraction {100 * lsf:.1f} % exceeds {100 * limit:g} %", lsf, limit)

