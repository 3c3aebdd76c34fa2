"""One colour per VOI name, the same in every figure (slice contours, registration overlays, DVHs) and in RT-Struct.

Fixed colours for the organ VOIs (``liver``, ``normal_liver``, ``lungs``) and for a lesion label map
drawn as one VOI (``lesions``, ``tumour``); lesion instances ``lesion_<id>`` take a fixed
qualitative palette by id (``lesion_1`` is always amber, whatever other VOIs a figure shows), and
ids beyond the palette get hues spaced by the golden angle. The fixed colours are saturated and of
medium-high lightness, so they read on a dark CT, on the dose colour map (drawn with a dark edge,
see :mod:`sirtjax.report.figures`) and on a white DVH plot; their smallest CIE76 colour difference
is about 47 (different colours at a glance from about 10).
"""

from __future__ import annotations

import colorsys
from collections.abc import Iterable

NAMED_COLOURS = {
    "liver": "#1ec8ff",  # azure
    "normal_liver": "#3ddc84",  # green
    "lungs": "#7b8cff",  # periwinkle
    "lung": "#7b8cff",
    "lesions": "#ff3d8b",  # pink: a lesion label map drawn as one VOI
    "tumour": "#ff3d8b",
}
LESION_PALETTE = ("#ff9e1b", "#e64aff", "#c8f526", "#ff4f3a")  # lesion_1..4: amber, violet, lime, red-orange
_GOLDEN = 0.6180339887498949


def _lesion_id(name: str) -> int | None:
    prefix, _, rest = name.partition("_")
    return int(rest) if prefix == "lesion" and rest.isdigit() and int(rest) > 0 else None


def voi_colour(name: str) -> str:
    """The colour ('#rrggbb') of a VOI name; names that are neither organs nor ``lesion_<id>`` get a hue from their text.

    ``lesion_<id>`` for id > len(LESION_PALETTE): hue (0.05 + id * golden ratio) mod 1, so consecutive ids differ.
    """
    if name in NAMED_COLOURS:
        return NAMED_COLOURS[name]
    lesion = _lesion_id(name)
    if lesion is not None and lesion <= len(LESION_PALETTE):
        return LESION_PALETTE[lesion - 1]
    index = lesion if lesion is not None else sum(name.encode()) + len(LESION_PALETTE) + 1
    r, g, b = colorsys.hsv_to_rgb((0.05 + index * _GOLDEN) % 1.0, 0.7, 0.95)
    return f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"


def voi_colours(names: Iterable[str]) -> dict[str, str]:
    """Name -> colour for several VOIs (each independent of the others: the same VOI has the same colour everywhere)."""
    return {n: voi_colour(n) for n in names}


def voi_colour_rgb(name: str) -> tuple[int, int, int]:
    """The colour of a VOI as (r, g, b) in 0..255 (e.g. an RT-Struct ROI Display Color)."""
    h = voi_colour(name)
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)
