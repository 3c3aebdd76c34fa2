"""Which widths of the liver U-Net fit the 10 s budget: `segment_liver` time on the 3 mm MAA CT of seed 300 after
compilation, for the shipped spec (tiles, blend, noise matching) with other channel widths and random weights.

``--norms`` also runs each width without normalisation (as :mod:`sirtjax.models.freeze_norm` makes it): ``none`` on
the shipped tiles, ``none-one-pass`` on the thesis' 136 x 136 x 163 tile, which takes a 3 mm CT in one pass.

    python benchmarks/segmentation/bench_widths.py [--widths "4,8,16,32;4,16,32,64"] [--norms instance,none,none-one-pass]
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stress import _timing, render  # noqa: E402


def main() -> None:
    """Time every width and print one line each: parameters, size of the weights, seconds."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="4,8,16,32;4,12,24,48;4,16,32,64;6,12,24,48;8,16,32,64")
    ap.add_argument("--norms", default="instance", help="comma-separated: instance, none, none-one-pass")
    a = ap.parse_args()
    from sirtjax.models import load_model
    from sirtjax.models.store import build_model
    from sirtjax.segmentation import segment_liver
    from sirtjax.segmentation.infer import DEFAULT_TILE_OUT
    from sirtjax.volume import make_volume

    _, spec = load_model("liver")
    r = render(("CT non-contrast (MAA CT)", 300))[2]
    vol = make_volume(r["image"], r["spacing"], r["origin"], r["direction"])
    models = {}
    variants = {"instance": {}, "none": {"norm": None}, "none-one-pass": {"norm": None, "tile_out": list(DEFAULT_TILE_OUT), "tile_batch": 1}}
    unknown = set(a.norms.split(",")) - set(variants)
    if unknown:
        ap.error(f"--norms: unknown {sorted(unknown)}; expected some of {list(variants)}")
    for norm in a.norms.split(","):
        tiles = variants[norm]
        for widths in a.widths.split(";"):
            s = dict(spec, features=[int(w) for w in widths.split(",")], **tiles)
            model = build_model(s, rngs=nnx.Rngs(0))
            n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
            models[f"[{widths}], norm {norm}: {n / 1e6:.3f} M parameters, {n * 4 / 2**20:.2f} MB"] = (model, s)
    print("\n".join(_timing(models, {"MAA CT": vol}, segment_liver)))


if __name__ == "__main__":
    main()
