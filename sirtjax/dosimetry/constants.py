"""Named 90Y constant sets: half-life, mean energy per decay, and the dose factor they imply.

Under permanent trapping (microspheres never leave, only physical decay) an initial activity A0
gives ``A0 * T_half / ln 2`` decays. With a mean energy E per decay absorbed locally, the dose to a
mass M is ``E * A0 * T_half / (ln 2 * M)``; for A0 = 1 GBq and M = 1 kg this is the *dose factor*
in Gy*kg/GBq (thesis eq. 1.3). Each set computes it from its half-life and energy, or (for the
vendors' conventions, which are quoted as a rounded factor) derives the energy from the factor, so
every set carries all three numbers and reports them. The set used is part of every output.

Sets:
  - ``icrp107`` (default): T_half 64.1 h, mean beta energy 0.9267 MeV, exact CODATA MeV -> J:
    49.43 Gy*kg/GBq. The voxel S-value tables (Lanconelli et al. 2012) are normalised to this
    energy (their closure, see :mod:`sirtjax.dosimetry.kernels`).
  - ``thesis``: the thesis' eq. 1.3: 926.7 keV, 1.602e-16 J/keV, T_half 64.0416 h: 49.38.
  - ``resin``: the 49.67 Gy*kg/GBq convention of resin-sphere (SIR-Spheres) practice.
  - ``glass``: the 50 Gy*kg/GBq convention of glass-sphere (TheraSphere) practice.
"""

from __future__ import annotations

import dataclasses
import math

JOULE_PER_MEV = 1.602176634e-13  # CODATA 2018, exact
Y90_HALF_LIFE_H = 64.1  # ICRP-107
Y90_MEAN_BETA_ENERGY_MEV = 0.9267  # ICRP-107 mean beta energy per decay
LIVER_DENSITY_G_ML = 1.03  # DESIGN.md default for liver tissue
LUNG_MASS_KG = 1.0  # conventional lung mass of the lung-dose formula (thesis 1.5.3.1)


@dataclasses.dataclass(frozen=True)
class DoseConstants:
    """A named 90Y constant set: half-life (h), mean energy per decay (MeV), dose factor (Gy*kg/GBq)."""

    name: str
    half_life_h: float
    mean_energy_mev: float
    gy_kg_per_gbq: float
    source: str

    @property
    def decays_per_gbq(self) -> float:
        """Number of decays of 1 GBq under permanent trapping (A0 * T_half / ln 2)."""
        return 1e9 * self.half_life_h * 3600.0 / math.log(2.0)

    def to_dict(self) -> dict:
        """The set as plain JSON-ready numbers and strings."""
        return dataclasses.asdict(self)


def dose_factor_gy_kg_per_gbq(half_life_h: float, mean_energy_mev: float,
                              joule_per_mev: float = JOULE_PER_MEV) -> float:
    """Dose (Gy) to 1 kg from 1 GBq trapped for ever: E * T_half / ln 2 (thesis eq. 1.3)."""
    return mean_energy_mev * joule_per_mev * 1e9 * half_life_h * 3600.0 / math.log(2.0)


def _from_energy(name: str, half_life_h: float, mean_energy_mev: float, source: str,
                 joule_per_mev: float = JOULE_PER_MEV) -> DoseConstants:
    factor = dose_factor_gy_kg_per_gbq(half_life_h, mean_energy_mev, joule_per_mev)
    return DoseConstants(name, half_life_h, mean_energy_mev, factor, source)


def _from_factor(name: str, gy_kg_per_gbq: float, source: str) -> DoseConstants:
    energy = gy_kg_per_gbq / dose_factor_gy_kg_per_gbq(Y90_HALF_LIFE_H, 1.0)
    return DoseConstants(name, Y90_HALF_LIFE_H, energy, gy_kg_per_gbq, source)


def constant_sets() -> dict[str, DoseConstants]:
    """All named sets, keyed by name (a fresh dict each call)."""
    sets = [
        _from_energy("icrp107", Y90_HALF_LIFE_H, Y90_MEAN_BETA_ENERGY_MEV,
                     "ICRP-107: T1/2 64.1 h, mean beta energy 0.9267 MeV per decay"),
        _from_energy("thesis", 64.0416, 0.9267,
                     "thesis eq. 1.3: 926.7 keV, 1.602e-16 J/keV, T1/2 64.0416 h", joule_per_mev=1.602e-13),
        _from_factor("resin", 49.67, "resin-sphere (SIR-Spheres) convention, 49.67 Gy*kg/GBq"),
        _from_factor("glass", 50.0, "glass-sphere (TheraSphere) convention, 50 Gy*kg/GBq"),
    ]
    return {s.name: s for s in sets}


def get_constants(name: str | DoseConstants = "icrp107") -> DoseConstants:
    """The constant set of that name (a DoseConstants passes through); ValueError lists the names."""
    if isinstance(name, DoseConstants):
        return name
    sets = constant_sets()
    if name not in sets:
        raise ValueError(f"unknown constant set '{name}' (choose from {', '.join(sets)})")
    return sets[name]


def kernel_reference() -> DoseConstants:
    """The set the voxel S-value tables are normalised to (ICRP-107 energy per decay)."""
    return get_constants("icrp107")
