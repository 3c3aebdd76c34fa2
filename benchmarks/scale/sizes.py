"""How time and memory grow with the image: registration, liver inference and VSV dose on N^3 grids.

Every (task, N) runs in its own process, which reports its first call (compile included), a second call on the
same grid (warm) and its peak resident memory. The grids have 2.4 mm voxels (a tabulated VSV kernel), so the field
of view grows with N: 154 mm at 64^3 to 614 mm at 256^3. The scene is two ellipsoids (a body and a liver) and a
sphere, scaled with the field of view; the moving image is the fixed one shifted by 4% of the field of view.

- register: the cnn-guided preset with both liver masks (its finest level is 3 mm, so its cost follows the field
  of view at 3 mm);
- segment: the shipped liver U-Net (``predict_probability``; it works on its own 3 mm grid);
- dose: ``dose_vsv`` of an activity map on the grid (an FFT convolution at the native 2.4 mm).

    python benchmarks/scale/sizes.py --sizes 64,128,192,256 --out benchmarks/scale/results
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPACING_MM = 2.4


def scene(n: int, shift_fraction: float = 0.0):
    """(image, liver mask) Volumes on an n^3 grid of SPACING_MM voxels, the content shifted along x."""
    from sirtjax.volume import make_volume, world_grid

    fov = n * SPACING_MM
    vol = make_volume(np.zeros((n, n, n), np.float32), (SPACING_MM,) * 3, (-fov / 2,) * 3)
    p = np.asarray(world_grid(vol)) - np.array([shift_fraction * fov, 0.0, 0.0])
    body = np.linalg.norm(p / (fov * np.array([0.42, 0.32, 0.45])), axis=-1) < 1
    liver = np.linalg.norm((p - fov * np.array([0.1, 0.0, 0.05])) / (fov * np.array([0.18, 0.14, 0.15])), axis=-1) < 1
    spot = np.linalg.norm(p - fov * np.array([-0.15, 0.08, -0.1]), axis=-1) < 0.07 * fov
    image = (-1000.0 + 1040.0 * body + 60.0 * liver + 80.0 * spot).astype(np.float32)
    return vol.with_array(image), vol.with_array(liver.astype(np.uint8))


def one(task: str, n: int) -> dict:
    """First and warm call of ``task`` on an n^3 grid, and this process's peak memory."""
    import jax

    if task == "register":
        from sirtjax.registration import PRESETS, register

        (f, fm), (m, mm) = scene(n), scene(n, 0.04)

        def call():
            r = register(f, m, fixed_mask=fm, moving_mask=mm, config=PRESETS["cnn-guided"], key=jax.random.key(0))
            return np.asarray(r.displacement.array)
    elif task == "segment":
        from sirtjax.models import load_model
        from sirtjax.segmentation import predict_probability

        image, _ = scene(n)
        net, spec = load_model("liver")

        def call():
            return np.asarray(predict_probability(net, spec, image, modality="ct").array)
    else:
        from sirtjax.dosimetry.dose import dose_vsv

        _, liver = scene(n)
        activity = np.asarray(liver.array, np.float32) * np.float32(2.0 / max(int(liver.array.sum()), 1))

        def call():
            return np.asarray(dose_vsv(activity, liver.spacing_mm))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return {"task": task, "n": n, "first_s": times[0], "warm_s": times[1],
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,192,256")
    parser.add_argument("--tasks", default="dose,segment,register")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/scale/results"))
    parser.add_argument("--one", nargs=2, metavar=("TASK", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    rows = []
    for task in args.tasks.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            run = subprocess.run([sys.executable, __file__, "--one", task, str(n)], capture_output=True, text=True)
            if run.returncode != 0:
                rows.append({"task": task, "n": n, "error": run.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sizes.json").write_text(json.dumps({"load_average": os.getloadavg(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
