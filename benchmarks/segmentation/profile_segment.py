"""Where `sirtjax segment`'s time goes on one CT: each stage of the liver segmentation timed in a new process.

    python benchmarks/segmentation/profile_segment.py IMAGE [--cache DIR]

Imports, reading, loading the model, preparing the network's input (anti-aliased resampling to 3 mm, the noise
check), the network over the content box's tiles, resampling the probability back, post-processing and writing the
mask, as `sirtjax segment` runs them; `--cache` is the compiled programs' folder (`$SIRTJAX_CACHE_DIR/programs`).
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from sirtjax.io import read_volume, write_volume  # noqa: E402
from sirtjax.models.store import load_model  # noqa: E402
from sirtjax.preprocess import resample_to  # noqa: E402
from sirtjax.programs import ProgramCache  # noqa: E402
from sirtjax.segmentation.infer import foreground, predict_array, prepare_image, spec_tiling  # noqa: E402
from sirtjax.segmentation.postprocess import liver_mask  # noqa: E402


def main() -> None:
    """Time each stage once and print a markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", type=Path)
    ap.add_argument("--cache", type=Path, default=None, help="compiled programs' folder (default: none, compile)")
    a = ap.parse_args()
    rows = [("imports (sirtjax, JAX, Flax)", time.perf_counter() - START)]

    def timed(label, fn):
        t = time.perf_counter()
        out = fn()
        rows.append((label, time.perf_counter() - t))
        return out

    vol = timed("read", lambda: read_volume(a.image))
    model, spec = timed("load the model", lambda: load_model("liver"))
    prepared = timed("prepare (resample to 3 mm, noise check)", lambda: prepare_image(
        vol, "ct", spec["spacing_mm"], ct_noise_index_hu=spec.get("ct_noise_index_hu"), mr_noise_index=spec.get("mr_noise_index")))
    programs = None if a.cache is None else ProgramCache(a.cache)
    probs = timed("network (tiles of the content box)", lambda: predict_array(
        model, prepared.array, **spec_tiling(spec), batch_size=int(spec.get("tile_batch", 1)), programs=programs))
    prob = timed("probability back onto the image grid", lambda: resample_to(
        prepared.with_array(foreground(probs).astype(np.float32)), vol, order=1, default_value=0.0))
    mask = timed("post-process (largest component, holes)", lambda: liver_mask(np.asarray(prob.array)))
    with tempfile.TemporaryDirectory() as tmp:
        timed("write the mask (.nii.gz)", lambda: write_volume(prob.with_array(mask), Path(tmp) / "liver.nii.gz", dtype=np.uint8))
    print(f"{a.image}: {'x'.join(map(str, vol.shape[::-1]))} voxels (x, y, z); network input {'x'.join(map(str, prepared.shape[::-1]))}")
    print("| stage | s |\n|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} |")
    print(f"| total in the process | {time.perf_counter() - START:.2f} |")


if __name__ == "__main__":
    main()
