"""Average the weights of several model folders of one architecture (a "model soup" of one training run's steps).

    python scripts/average_models.py runs/liver_real2/validated/300 runs/liver_real2/validated/400 \
        runs/liver_real2/validated/500 -o sirtjax/data/models/liver

Every weight becomes the mean of the folders' (in float64, stored in its own dtype); model.json is the last folder's,
its ``step`` replaced by the list of steps and its ``val_dice`` dropped (the average was not validated in training).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def average_models(folders: list[Path], out: Path) -> Path:
    """Write the mean of the folders' weights.npz and the last folder's model.json (steps listed) into out."""
    weights = [np.load(Path(f) / "weights.npz") for f in folders]
    names = weights[0].files
    for f, w in zip(folders, weights):
        if sorted(w.files) != sorted(names) or any(w[k].shape != weights[0][k].shape for k in names):
            raise SystemExit(f"error: {f}: its weights do not match {folders[0]}'s (another architecture)")
    specs = [json.loads((Path(f) / "model.json").read_text()) for f in folders]
    spec = {k: v for k, v in specs[-1].items() if k != "val_dice"}
    spec["step"] = [s.get("step") for s in specs]
    out.mkdir(parents=True, exist_ok=True)
    mean = {k: np.mean([w[k].astype(np.float64) for w in weights], axis=0).astype(weights[0][k].dtype) for k in names}
    np.savez_compressed(out / "weights.npz", **mean)
    (out / "model.json").write_text(json.dumps(spec, indent=2) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="model folders (model.json, weights.npz)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="folder for the averaged model")
    args = parser.parse_args()
    print(average_models(args.folders, args.out))


if __name__ == "__main__":
    main()
