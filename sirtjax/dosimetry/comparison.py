"""Plan against verification per VOI: each side's value of a dose statistic and verification - plan."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

COMPARE_KEYS = ("mean_gy", "D70_gy", "V70_pct", "V100_pct")
"""The statistics compared by default: mean dose, D70 (Gy), V70 and V100 (% of the VOI)."""


def _number(value) -> float | None:
    """A finite float, or None for a missing, None or NaN value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True)
class Compared:
    """One statistic of one VOI in the plan and in the verification (None: absent or empty on that side)."""

    plan: float | None
    verification: float | None

    @property
    def difference(self) -> float | None:
        """verification - plan, or None when either side is missing."""
        if self.plan is None or self.verification is None:
            return None
        return self.verification - self.plan


@dataclasses.dataclass(frozen=True)
class VoiComparison:
    """The compared statistics of one VOI, by key (e.g. 'mean_gy')."""

    name: str
    values: Mapping[str, Compared]

    def __getitem__(self, key: str) -> Compared:
        return self.values[key]

    def to_dict(self) -> dict:
        """JSON-ready: {"name": ..., key: {"plan", "verification", "difference"}, ...}."""
        return {"name": self.name, **{k: {"plan": c.plan, "verification": c.verification, "difference": c.difference}
                                      for k, c in self.values.items()}}


def compare_vois(plan: Sequence[Mapping], verification: Sequence[Mapping],
                 keys: Sequence[str] = COMPARE_KEYS) -> tuple[VoiComparison, ...]:
    """Per VOI name (plan order, then verification-only VOIs), the keys' values on both sides.

    The inputs are per-VOI statistics records (:meth:`VoiStatistics.to_records`); a VOI or value
    missing on one side gives None there and no difference.
    """
    p_by = {r["name"]: r for r in plan}
    v_by = {r["name"]: r for r in verification}
    return tuple(VoiComparison(name, {k: Compared(_number(p_by.get(name, {}).get(k)), _number(v_by.get(name, {}).get(k)))
                                      for k in keys})
                 for name in dict.fromkeys([*p_by, *v_by]))
