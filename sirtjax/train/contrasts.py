"""Scanner-like tissue contrasts for the synthetic generator: a typical intensity per tissue code in each CT phase
and MR sequence, windowed as inference windows them.

Fully random contrasts (SynthSeg's) force shape over contrast; a share of patches with the contrasts scanners give
keeps the relations that real images have (on a non-contrast CT the liver a little brighter than muscle and spleen,
fat dark; on T1 fat bright, ...) in view, now on real anatomy as well as the phantom's
(`sirtjax.train.synth.SynthConfig.realistic_prob`). The phantom's tissues take the phantom's own table
(`sirtjax.phantom.modalities`), the real scans' extra codes (`sirtjax.train.anatomy`) the textbook values below.
CT is windowed to [-200, 200] HU and MR to [0, 80 % of the sequence's brightest tissue], both onto [-0.5, 0.5].
Approximate: one value per tissue; the generator adds per-patch jitter, noise, bias and blur.
"""

from __future__ import annotations

import functools

import numpy as np

from sirtjax.phantom.modalities import sample_intensities
from sirtjax.phantom.raster import Tissue
from sirtjax.train import anatomy
from sirtjax.train.label_maps import FLUID, N_CODES

CONTRASTS = ("nc_ct", "ce_ct", "art_ct", "del_ct", "mr_t1", "mr_t2")
CT_WINDOW_HU = (-200.0, 200.0)
MR_WINDOW_TOP = 0.8  # the MR window's top: this fraction of the brightest tissue, as inference windows an MR

# the real scans' own codes: (nc_ct, ce_ct, art_ct, del_ct HU; mr_t1, mr_t2 a.u. on the phantom's scale)
_REAL = {
    anatomy.PANCREAS: (40, 100, 110, 80, 520, 330),
    anatomy.ADRENAL: (30, 70, 70, 55, 380, 300),
    anatomy.UNLABELLED: (40, 70, 55, 60, 350, 260),
    anatomy.LIVER_DARK: (35, 130, 60, 90, 200, 400),
    anatomy.COLON: (20, 45, 35, 35, 250, 450),
    anatomy.BLADDER: (8, 10, 10, 60, 150, 1500),
    anatomy.CYST: (8, 10, 10, 10, 150, 1500),
}


def _window(values: np.ndarray, contrast: str) -> np.ndarray:
    """Intensities of one contrast in the network's window units [-0.5, 0.5]."""
    if contrast.endswith("_ct"):
        lo, hi = CT_WINDOW_HU
        return np.clip((values - lo) / (hi - lo), 0.0, 1.0) - 0.5
    top = MR_WINDOW_TOP * float(np.max(values))
    return np.clip(values / top, 0.0, 1.0) - 0.5


@functools.lru_cache(maxsize=1)
def contrast_table() -> np.ndarray:
    """(len(CONTRASTS), N_CODES) float32 windowed intensities; lesion codes read as the liver (the generator's lesion
    step sets them relative to it), the fluid code as the gallbladder."""
    base = sample_intensities(np.random.default_rng(0), {"lesions": []})
    rows = []
    for c, contrast in enumerate(CONTRASTS):
        values = np.full(N_CODES, base[contrast]["LIVER"], np.float64)
        for tissue in Tissue:
            if tissue.name in base[contrast]:
                values[tissue] = base[contrast][tissue.name]
        for code, per_contrast in _REAL.items():
            values[code] = per_contrast[c]
        values[FLUID] = base[contrast]["GALLBLADDER"]
        values[Tissue.CLIP] = base[contrast]["CLIP"]
        rows.append(_window(values, contrast))
    return np.asarray(rows, np.float32)
