"""Lesion segmentation on study-renderer images of unseen seeds, and its effect on the partition-model plan.

Every image comes from `sirtjax.phantom.generate_study` (the study renderer, never the training
generator) for seeds no training config uses, with 1-12 lesions of 5-80 mm (PhantomConfig
n_lesions, lesion_diameter_mm). Part 1, per condition (contrast CT in two phases, T1 and T2-like
MR, non-contrast MAA CT, and a contrast CT with 20-30 lesions of 5-40 mm, as in multifocal disease),
runs `segment_lesions` inside the true liver with its defaults (threshold 0.5, and only the lesions
the image shows, contrast-to-noise ratio >= 5) and counts with thesis 7.3.3's rules
(`sirtjax.metrics.lesion_detection`, any shared voxel is overlap):

- sensitivity per size class of the reference lesion, precision per size class of the predicted
  lesion (the diameter of the sphere of the lesion's volume; < 10, 10-20, 20-50, > 50 mm);
- how many reference lesions the image shows (the Rose criterion on the windowed image, as training
  labels them: `sirtjax.segmentation.visibility`), and the sensitivity on those; the other
  columns count every lesion;
- DSC per reference lesion (against the predicted lesions overlapping it), DSC over all lesions of
  all scans pooled, false positives per scan.

Part 2 plans each study twice with the same registration key (`sirtjax.pipelines.plan`, quick
registration): with the true lesions given on the MAA CT, and with none given anywhere, so that
the lesion model finds them on the contrast CT and the registration maps them onto the MAA CT (the
landmark label maps are withheld too: they would carry the true lesions). The partition model's
activity of both is compared.

    python benchmarks/segmentation/lesions.py [--seeds 500-505] [--model lesions] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

# condition -> (image, modality, PhantomConfig overrides beyond PHANTOM)
CONDITIONS = {
    "contrast CT (portal venous)": ("diag_ct", "ct", {}),
    "T1 MR (oblique grid)": ("diag_mr", "mr", {}),
    "non-contrast CT (MAA CT)": ("maa_ct", "ct", {}),
    "CT arterial phase": ("diag_ct", "ct", {"diag_ct_phase": "arterial"}),
    "MR T2-like": ("diag_mr", "mr", {"diag_mr_sequence": "t2"}),
    "contrast CT, many lesions": ("diag_ct", "ct", {"n_lesions": (20, 30), "lesion_diameter_mm": (5.0, 40.0)}),
}
CLASSES = ((0.0, 10.0, "< 10 mm"), (10.0, 20.0, "10-20 mm"), (20.0, 50.0, "20-50 mm"), (50.0, np.inf, "> 50 mm"))
PHANTOM = {"n_lesions": (1, 12), "lesion_diameter_mm": (5.0, 80.0)}


def diameter_mm(n_voxels: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Equivalent-sphere diameters (mm) of lesions of n_voxels voxels."""
    return (6.0 * np.asarray(n_voxels, float) * voxel_ml * 1000.0 / np.pi) ** (1.0 / 3.0)


def shown_lesions(vol, liver_vol, ref_vol, modality: str) -> np.ndarray:
    """Per reference lesion id (index), whether the image as given shows it: the Rose criterion on the windowed
    image against the liver ring around the lesion, as `segment_lesions` keeps its own (`instance_cnr`)."""
    from sirtjax.segmentation.lesions import instance_cnr
    from sirtjax.segmentation.visibility import shown_ids

    ids = np.asarray(ref_vol.array).astype(np.int32)
    return np.asarray(shown_ids(instance_cnr(vol, ids, np.asarray(liver_vol.array) > 0, modality)))


def score_image(pred_vol, ref_vol, shown: np.ndarray) -> dict:
    """Per reference lesion (diameter, detected, DSC, shown by the image) and per predicted lesion (diameter, true
    positive) of two instance-map Volumes on one grid; `shown` from :func:`shown_lesions`."""
    from sirtjax.metrics import lesion_detection

    det = lesion_detection(pred_vol, ref_vol)
    pred, ref = np.asarray(pred_vol.array).astype(np.int32), np.asarray(ref_vol.array).astype(np.int32)
    voxel_ml = float(np.prod(ref_vol.spacing_mm)) / 1000.0
    ref_ids, pred_ids = det.ref_ids, [int(i) for i in np.unique(pred) if i > 0]
    ref_rows = []
    for rid, found in zip(ref_ids, det.ref_detected):
        r = ref == rid
        hit = np.unique(pred[r & (pred > 0)])
        p = np.isin(pred, hit) if len(hit) else np.zeros_like(r)
        dsc = 2.0 * np.sum(r & p) / (np.sum(r) + np.sum(p))
        ref_rows.append({"diameter_mm": float(diameter_mm(r.sum(), voxel_ml)), "detected": bool(found), "dsc": float(dsc),
                         "shown": bool(shown[rid])})
    pred_rows = [{"diameter_mm": float(diameter_mm(np.sum(pred == i), voxel_ml)), "tp": bool(np.any((pred == i) & (ref > 0)))}
                 for i in pred_ids]
    pooled = {"intersection": int(np.sum((pred > 0) & (ref > 0))), "pred": int(np.sum(pred > 0)), "ref": int(np.sum(ref > 0))}
    return {"ref": ref_rows, "pred": pred_rows, "fp": det.fp, "pooled": pooled}


def summarise(scores: list[dict]) -> dict:
    """Sensitivity, precision, mean DSC per size class, pooled DSC and FP per scan over image scores."""
    refs = [r for s in scores for r in s["ref"]]
    preds = [p for s in scores for p in s["pred"]]
    rows = {}
    for lo, hi, name in CLASSES:
        rr = [r for r in refs if lo <= r["diameter_mm"] < hi]
        pp = [p for p in preds if lo <= p["diameter_mm"] < hi]
        ss = [r for r in rr if r["shown"]]
        rows[name] = {
            "n_ref": len(rr), "sensitivity": np.mean([r["detected"] for r in rr]) if rr else None,
            "n_shown": len(ss), "sensitivity_shown": np.mean([r["detected"] for r in ss]) if ss else None,
            "n_pred": len(pp), "precision": np.mean([p["tp"] for p in pp]) if pp else None,
            "dsc_per_lesion": np.mean([r["dsc"] for r in rr]) if rr else None,
        }
    inter, pred, ref = (sum(s["pooled"][k] for s in scores) for k in ("intersection", "pred", "ref"))
    shown = [r for r in refs if r["shown"]]
    return {
        "classes": rows,
        "all": {"n_ref": len(refs), "sensitivity": float(np.mean([r["detected"] for r in refs])) if refs else None,
                "n_shown": len(shown), "sensitivity_shown": float(np.mean([r["detected"] for r in shown])) if shown else None,
                "n_pred": len(preds), "precision": float(np.mean([p["tp"] for p in preds])) if preds else None,
                "dsc_per_lesion": float(np.mean([r["dsc"] for r in refs])) if refs else None},
        "dsc_pooled": 2.0 * inter / (pred + ref) if pred + ref else None,
        "fp_per_scan": float(np.mean([s["fp"] for s in scores])),
    }


def detection(seeds: list[int], model: str) -> tuple[dict, float]:
    """Part 1: {condition: summary} over the seeds, and the mean segment_lesions time (s) on a contrast CT."""
    from sirtjax.models import load_model
    from sirtjax.phantom import PhantomConfig, generate_study
    from sirtjax.segmentation import segment_lesions

    net, spec = load_model(model)
    scores = {name: [] for name in CONDITIONS}
    times = []
    for seed in seeds:
        studies = {}
        for cond, (image, modality, extra) in CONDITIONS.items():
            tag = json.dumps(extra, sort_keys=True)
            if tag not in studies:
                studies[tag] = generate_study(seed, PhantomConfig(**{**PHANTOM, **extra}))
            study = studies[tag]
            vol, liver, ref = (study.images[k] for k in (image, f"{image}_liver", f"{image}_lesions"))
            t0 = time.perf_counter()
            seg = segment_lesions(net, spec, vol, liver, modality=modality)
            if cond == next(iter(CONDITIONS)):
                times.append(time.perf_counter() - t0)
            scores[cond].append(score_image(seg.labels, ref, shown_lesions(vol, liver, ref, modality)))
            print(f"seed {seed} {cond}: {len(seg.lesions)} found, {int(np.asarray(ref.array).max())} true", flush=True)
    return {name: summarise(s) for name, s in scores.items()}, float(np.mean(times[1:] if len(times) > 1 else times))


def plan_effect(seeds: list[int], model: str, work: Path) -> list[dict]:
    """Part 2: per study the partition activity (GBq) with the true lesions and with segmented ones."""
    import jax

    from sirtjax.phantom import PhantomConfig, generate_study, write_study
    from sirtjax.pipelines.inputs import QUICK_REGISTRATION, WorkflowOptions
    from sirtjax.pipelines.plan import plan
    from sirtjax.pipelines.read import read_diagnostics, read_session, study_data
    from sirtjax.pipelines.segment import model_lesion_segmenter
    from sirtjax.io.study import load_study

    rows = []
    for seed in seeds:
        folder = work / f"study_{seed}"
        if not folder.exists():
            write_study(generate_study(seed, PhantomConfig(**PHANTOM)), folder)
        manifest = load_study(folder)
        session, diagnostics, data = read_session(manifest, "maa"), read_diagnostics(manifest), study_data(manifest)
        options = WorkflowOptions(registration=QUICK_REGISTRATION)
        true = plan(session, diagnostics, data, options, key=jax.random.key(seed))
        bare = dataclasses.replace(session, anatomy=dataclasses.replace(session.anatomy, lesions=None, labels=None))
        bare_diag = tuple(dataclasses.replace(d, lesions=None, labels=None) for d in diagnostics)
        found = plan(bare, bare_diag, data, dataclasses.replace(options, lesion_segmenter=model_lesion_segmenter(model)),
                     key=jax.random.key(seed))

        def partition(p) -> float:
            return next(x["activity_gbq"] for x in p.report["prescriptions"] if x["method"] == "partition")

        def tumour_ml(p) -> float:
            return float(np.sum(p.report["compartments"]["tumour_volume_ml_ct"]))

        rows.append({"seed": seed, "true_gbq": partition(true), "segmented_gbq": partition(found),
                     "true_lesions": len(true.report["compartments"]["tumour_volume_ml_ct"]),
                     "segmented_lesions": len(found.report["compartments"]["tumour_volume_ml_ct"]),
                     "true_tumour_ml": tumour_ml(true), "segmented_tumour_ml": tumour_ml(found),
                     "lesion_source": found.report["vois"]["lesions"]})
        print(rows[-1], flush=True)
    return rows


def _f(x, digits=3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(det: dict, seconds: float, effect: list[dict], seeds: list[int], model: str) -> str:
    """The results as the markdown page committed under results/."""
    lines = [f"# Lesion segmentation, model `{model}`, seeds {seeds[0]}-{seeds[-1]} ({len(seeds)} studies)", "",
             f"Phantom: {PHANTOM}; lesions inside the true liver. Host: {platform.machine()}, {os.cpu_count()} CPUs, "
             f"load {os.getloadavg()[0]:.1f}. `segment_lesions` on a contrast CT: {seconds:.1f} s.", ""]
    for name, (image, _, extra) in CONDITIONS.items():
        d = det[name]
        lines += [f"## {name} (`{image}`{', ' + json.dumps(extra) if extra else ''})", "", "| size class | reference lesions | sensitivity | shown by the image | sensitivity on those | predicted lesions | precision | DSC per lesion |",
                  "|---|---|---|---|---|---|---|---|"]
        for cls, r in d["classes"].items():
            lines.append(f"| {cls} | {r['n_ref']} | {_f(r['sensitivity'], 2)} | {r['n_shown']} | {_f(r['sensitivity_shown'], 2)} | {r['n_pred']} | "
                         f"{_f(r['precision'], 2)} | {_f(r['dsc_per_lesion'], 2)} |")
        a = d["all"]
        lines += [f"| all | {a['n_ref']} | {_f(a['sensitivity'], 2)} | {a['n_shown']} | {_f(a['sensitivity_shown'], 2)} | {a['n_pred']} | "
                  f"{_f(a['precision'], 2)} | {_f(a['dsc_per_lesion'], 2)} |", "",
                  f"DSC over all lesions (pooled): {_f(d['dsc_pooled'])}; false positives per scan: {d['fp_per_scan']:.2f}.", ""]
    if effect:
        lines += ["## Partition-model activity: segmented against true lesions", "",
                  "| seed | true lesions | found | tumour ml true | tumour ml found | activity true (GBq) | activity found (GBq) | difference |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in effect:
            diff = 100 * (r["segmented_gbq"] / r["true_gbq"] - 1)
            lines.append(f"| {r['seed']} | {r['true_lesions']} | {r['segmented_lesions']} | {r['true_tumour_ml']:.1f} | "
                         f"{r['segmented_tumour_ml']:.1f} | {r['true_gbq']:.3f} | {r['segmented_gbq']:.3f} | {diff:+.1f} % |")
        diffs = [abs(r["segmented_gbq"] / r["true_gbq"] - 1) for r in effect]
        lines += ["", f"Mean absolute difference {100 * np.mean(diffs):.1f} %, largest {100 * np.max(diffs):.1f} %.", ""]
    return "\n".join(lines)


def main() -> None:
    """Run both parts and write results/lesions.md and results/lesions.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="500-505")
    ap.add_argument("--model", default="lesions")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--work", type=Path, default=Path("runs/lesion_bench"))
    ap.add_argument("--skip-plan", action="store_true")
    args = ap.parse_args()
    lo, _, hi = args.seeds.partition("-")
    seeds = list(range(int(lo), int(hi or lo) + 1))
    args.out.mkdir(parents=True, exist_ok=True)  # before the work, so that a file in the way fails at once
    det, seconds = detection(seeds, args.model)
    effect = [] if args.skip_plan else plan_effect(seeds, args.model, args.work)
    (args.out / "lesions.json").write_text(json.dumps({"seeds": seeds, "model": args.model, "detection": det,
                                                       "segment_seconds": seconds, "plan": effect}, indent=1, default=float))
    (args.out / "lesions.md").write_text(markdown(det, seconds, effect, seeds, args.model))
    print((args.out / "lesions.md").read_text())
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
