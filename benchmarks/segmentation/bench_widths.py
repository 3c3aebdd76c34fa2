"""Which widths of the liver U-Net fit the 10 s budget: `segment_liver` time on the 3 mm MAA CT of seed 300 after
compilation, for the shipped spec (tiles, blend, noise matching) with other channel widths and random weights.

    python benchmarks/segmentation/bench_widths.py [--widths "4,8,16,32;4,16,32,64"]
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
    a = ap.parse_args()
    from sirtjax.models import load_model
    from sirtjax.models.store import build_model
    from sirtjax.segmentation import segment_liver
    from sirtjax.volume import make_volume

    _, spec = load_model("liver")
    r = render(("CT non-contrast (MAA CT)", 300))[2]
    vol = make_volume(r["image"], r["spacing"], r["origin"], r["direction"])
    models = {}
    for widths in a.widths.split(";"):
        s = dict(spec, features=[int(w) for w in widths.split(",")])
        model = build_model(s, rngs=nnx.Rngs(0))
        n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))
        models[f"[{widths}]: {n / 1e6:.3f} M parameters, {n * 4 / 2**20:.2f} MB"] = (model, s)
    print("\n".join(_timing(models, {"MAA CT": vol}, segment_liver)))


if __name__ == "__main__":
    main()
