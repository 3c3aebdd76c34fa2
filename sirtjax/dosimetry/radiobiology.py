"""Radiobiology of a permanent 90Y implant: BED, EUD, LKB NTCP and Poisson TCP, voxel by voxel.

The microspheres stay where they lodge, so the dose rate falls with the physical decay alone,
R(t) = R0 exp(-lambda t) with lambda = ln 2 / T_half, and the dose is D = R0 / lambda. Under the
linear-quadratic model with mono-exponential repair of sublethal damage (mu = ln 2 / T_repair),
the biologically effective dose of such a permanent implant is (Dale 1985, Br J Radiol 58:515,
eq. for a decaying source delivered to completion)::

    BED = D * (1 + D * lambda / ((mu + lambda) * alpha_beta_gy))

It reproduces the published 90Y example of Cremonesi et al. (Eur J Nucl Med Mol Imaging 2008;35:2088): 40 Gy to
the non-tumoral liver is a BED of 64 Gy (alpha/beta 2.5 Gy, repair 2.5 h, T_half 64.2 h; tests/test_radiobiology.py).

Radiosensitivities, repair half-times, TD50 and clonogen densities differ between tissues, tumour
types and sphere types, and the literature quotes a wide range; every tissue parameter is therefore
a required argument: this module holds no tissue constant. The 90Y half-life defaults to the
ICRP-107 value of :mod:`sirtjax.dosimetry.constants`.

- :func:`bed_gy`: the formula above, per voxel.
- :func:`eud_gy`: Niemierko's equivalent uniform dose (Med Phys 1997;24:103), the uniform dose with
  the same expected clonogen survival: -ln(sum_i v_i exp(-alpha D_i)) / alpha.
- :func:`geud_gy`: the generalised EUD (Niemierko 1999), (sum_i v_i D_i^a)^(1/a).
- :func:`lkb_ntcp`: Lyman-Kutcher-Burman NTCP, Phi((gEUD_{1/n} - TD50) / (m TD50)) (Kutcher &
  Burman 1989, Int J Radiat Oncol Biol Phys 16:1623; the gEUD form of Mohan et al. 1992).
- :func:`poisson_tcp`: exp(-sum_i N_i exp(-alpha BED_i)) with N_i clonogens in voxel i (Webb &
  Nahum 1993, Phys Med Biol 38:653), on the BED so that repair during the decay counts.

``weights`` are the voxels' fractions of the VOI (a mask's voxels, or partial-volume weights);
they are normalised here. All functions are jax-traceable and act on flat or shaped arrays alike.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from sirtjax.dosimetry.constants import Y90_HALF_LIFE_H


def _fractions(weights: jax.Array) -> jax.Array:
    w = jnp.asarray(weights, jnp.float32)
    return w / jnp.maximum(jnp.sum(w), jnp.finfo(jnp.float32).tiny)


def bed_gy(dose_gy: jax.Array, *, alpha_beta_gy: float, repair_half_time_h: float,
           half_life_h: float = Y90_HALF_LIFE_H) -> jax.Array:
    """BED (Gy) of a permanent implant's dose (Gy) per voxel (Dale 1985; module docstring)."""
    if alpha_beta_gy <= 0 or repair_half_time_h <= 0 or half_life_h <= 0:
        raise ValueError("alpha/beta, the repair half-time and the half-life must be positive")
    decay, repair = math.log(2.0) / half_life_h, math.log(2.0) / repair_half_time_h
    dose = jnp.asarray(dose_gy, jnp.float32)
    return dose * (1.0 + dose * (decay / ((repair + decay) * alpha_beta_gy)))


def eud_gy(dose_gy: jax.Array, weights: jax.Array, *, alpha_per_gy: float) -> jax.Array:
    """Niemierko's EUD (Gy): the uniform dose whose clonogen survival equals the VOI's (module docstring)."""
    if alpha_per_gy <= 0:
        raise ValueError("alpha must be positive")
    dose = jnp.asarray(dose_gy, jnp.float32)
    log_w = jnp.log(_fractions(weights))
    return -jax.nn.logsumexp(log_w - alpha_per_gy * dose) / alpha_per_gy  # stable for large alpha * D


def geud_gy(dose_gy: jax.Array, weights: jax.Array, *, a: float) -> jax.Array:
    """Generalised EUD (Gy), (sum_i v_i D_i^a)^(1/a); a = 1 is the mean dose, large a tends to the maximum."""
    if a == 0:
        raise ValueError("gEUD exponent a must not be 0")
    w = _fractions(weights)
    log_dose = jnp.log(jnp.maximum(jnp.asarray(dose_gy, jnp.float32), 0.0))
    terms = jnp.where(w > 0, jnp.log(w) + a * log_dose, -jnp.inf)  # log(v D^a): no overflow; voxels outside count 0
    return jnp.exp(jax.nn.logsumexp(terms) / a)


def lkb_ntcp(dose_gy: jax.Array, weights: jax.Array, *, td50_gy: float, m: float, n: float) -> jax.Array:
    """LKB normal-tissue complication probability of a VOI: Phi((gEUD(a = 1/n) - TD50) / (m TD50))."""
    if td50_gy <= 0 or m <= 0 or n <= 0:
        raise ValueError("TD50, m and n must be positive")
    t = (geud_gy(dose_gy, weights, a=1.0 / n) - td50_gy) / (m * td50_gy)
    return ndtr(t)


def poisson_tcp(bed: jax.Array, clonogens: jax.Array, *, alpha_per_gy: float) -> jax.Array:
    """Poisson tumour control probability, exp(-sum_i N_i exp(-alpha BED_i)); clonogens N_i per voxel."""
    if alpha_per_gy <= 0:
        raise ValueError("alpha must be positive")
    survivors = jnp.sum(jnp.asarray(clonogens, jnp.float32) * jnp.exp(-alpha_per_gy * jnp.asarray(bed, jnp.float32)))
    return jnp.exp(-survivors)


LKB_QUANTITIES = ("eqd2", "bed")  # what TD50 refers to: EQD2 (external-beam data in 2 Gy fractions) or BED


def eqd2_gy(bed: jax.Array, *, alpha_beta_gy: float) -> jax.Array:
    """Equivalent dose in 2 Gy fractions (Gy) of a BED: BED / (1 + 2 / (alpha/beta))."""
    return jnp.asarray(bed, jnp.float32) / (1.0 + 2.0 / alpha_beta_gy)


@dataclasses.dataclass(frozen=True)
class Lkb:
    """LKB parameters: TD50 (Gy of ``quantity``), slope m, volume exponent n."""

    td50_gy: float
    m: float
    n: float
    quantity: str  # 'eqd2' or 'bed'


@dataclasses.dataclass(frozen=True)
class TissueModel:
    """Radiobiological parameters of one tissue, all given by the user with their ``source``.

    alpha/beta and the repair half-time give the BED; alpha_per_gy the EUD (and with
    clonogens_per_ml the TCP); lkb the NTCP. Optional parameters left out skip that quantity.
    """

    alpha_beta_gy: float
    repair_half_time_h: float
    source: str
    alpha_per_gy: float | None = None
    clonogens_per_ml: float | None = None
    lkb: Lkb | None = None

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> TissueModel:
        """A TissueModel from JSON; ValueError naming ``where`` and the field for anything missing or wrong."""
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(d, Mapping):
            raise ValueError(f"{where}: expected an object")
        if unknown := set(d) - known:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        for name in ("alpha_beta_gy", "repair_half_time_h", "source"):
            if name not in d:
                raise ValueError(f"{where}: '{name}' is required")
        if not str(d["source"]).strip():
            raise ValueError(f"{where}: 'source' must say where the numbers come from")
        numbers = {k: _positive(d[k], f"{where}.{k}") for k in ("alpha_beta_gy", "repair_half_time_h", "alpha_per_gy",
                                                                  "clonogens_per_ml") if d.get(k) is not None}
        if d.get("clonogens_per_ml") is not None and d.get("alpha_per_gy") is None:
            raise ValueError(f"{where}: clonogens_per_ml (TCP) needs alpha_per_gy")
        lkb = None
        if d.get("lkb") is not None:
            raw = d["lkb"]
            if not isinstance(raw, Mapping) or set(raw) != {"td50_gy", "m", "n", "quantity"}:
                raise ValueError(f"{where}.lkb: expected exactly td50_gy, m, n and quantity ({' or '.join(LKB_QUANTITIES)})")
            if raw["quantity"] not in LKB_QUANTITIES:
                raise ValueError(f"{where}.lkb.quantity: one of {', '.join(LKB_QUANTITIES)}, got {raw['quantity']!r}")
            lkb = Lkb(*(_positive(raw[k], f"{where}.lkb.{k}") for k in ("td50_gy", "m", "n")), raw["quantity"])
        return cls(**numbers, source=str(d["source"]), lkb=lkb)


def _positive(value, where: str) -> float:
    """value as a float when it is a positive finite JSON number; ValueError naming ``where`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: expected a positive number, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class VoiRadiobiology:
    """Radiobiological summary of one VOI (Gy; None where its tissue model lacks the parameters)."""

    name: str
    volume_ml: float
    mean_dose_gy: float
    mean_bed_gy: float
    mean_eqd2_gy: float
    eud_bed_gy: float | None
    ntcp: float | None
    tcp: float | None


def voi_radiobiology(name: str, dose_gy: np.ndarray, tissue: TissueModel, *, voxel_volume_ml: float,
                     half_life_h: float = Y90_HALF_LIFE_H) -> VoiRadiobiology:
    """BED, EQD2, EUD (of the BED), NTCP and TCP of a VOI's voxel doses (Gy) under one tissue model."""
    dose = jnp.asarray(dose_gy, jnp.float32).ravel()
    if dose.size == 0:
        raise ValueError(f"VOI '{name}' is empty")
    bed = bed_gy(dose, alpha_beta_gy=tissue.alpha_beta_gy, repair_half_time_h=tissue.repair_half_time_h,
                 half_life_h=half_life_h)
    eqd2 = eqd2_gy(bed, alpha_beta_gy=tissue.alpha_beta_gy)
    weights = jnp.ones_like(dose)
    eud = ntcp = tcp = None
    if tissue.alpha_per_gy is not None:
        eud = float(eud_gy(bed, weights, alpha_per_gy=tissue.alpha_per_gy))
    if tissue.clonogens_per_ml is not None:
        clonogens = jnp.full_like(dose, tissue.clonogens_per_ml * voxel_volume_ml)
        tcp = float(poisson_tcp(bed, clonogens, alpha_per_gy=tissue.alpha_per_gy))
    if tissue.lkb is not None:
        p = tissue.lkb
        ntcp = float(lkb_ntcp(eqd2 if p.quantity == "eqd2" else bed, weights, td50_gy=p.td50_gy, m=p.m, n=p.n))
    return VoiRadiobiology(name, float(dose.size * voxel_volume_ml), float(jnp.mean(dose)), float(jnp.mean(bed)),
                           float(jnp.mean(eqd2)), eud, ntcp, tcp)
