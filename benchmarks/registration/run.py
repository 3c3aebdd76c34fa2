"""sirtjax registration vs SimpleITK, elastix and ANTs on phantom studies (accuracy + wall time).

Pairs: fixed = MAA CT, moving = diagnostic CT or MR, seeds given on the command line. Every method
sees the same images; the guided ones the same liver masks (CNN-guided) or label maps. Accuracy:
liver Dice, RMSD (thesis 5.3.4: liver MSD and landmark MCDs, mm) of the moving label map warped by
nearest neighbour, RRMSD over the seeds; where a field is available, liver folding (det J <= 0) and the
field's error against the phantom's true displacement over the fixed liver (mean and 90th percentile of
|u - u_true|, mm). The label metrics have a floor of their own (nearest-neighbour warping of 3 mm labels moves a
small landmark's centre by up to half a voxel per axis), which method ``truth`` (the true field, scored the same
way) measures.
Times are wall seconds per pair on this machine; sirtjax's are split into compile and run (``compile_all_s``:
every program's tracing and compiling in the call, see :func:`run_sirtjax`).

    python benchmarks/registration/run.py --seeds 1-6 --out benchmarks/registration/results

``--set KEY=VALUE`` (repeatable, VALUE as JSON; KEY a dotted path in the config's JSON form, list items by
index: ``affine.iterations``, ``stages.-1.w_reg``) changes a RegistrationConfig setting of every sirtjax
preset in the run, to compare variants on training seeds; such rows are named ``preset[KEY=VALUE;...]``.
``--keep-back`` guides cnn-lm-guided with every other landmark only and scores the others
(``kept_back_mcd_mm``: their mean mass-centre distance, for every method): does the guidance help
where it was not given?
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import scipy.ndimage as ndi
import SimpleITK as sitk

from sirtjax.io import from_sitk, to_sitk
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.phantom.deform import true_displacement
from sirtjax.phantom.mr_like import mr_like
from sirtjax.registration.grid_search import evaluate
from sirtjax.registration import PRESETS, RegistrationConfig, config_from_dict, register
from sirtjax.volume import Volume


MR_LIKE = "_mrlike"  # a moving name ending so: the MR-like remapping of that CT (mr_like)


def dilated(mask: Volume, mm: float) -> np.ndarray:
    """Mask dilated by about mm (metric region for the peers)."""
    it = max(1, int(round(mm / float(np.min(mask.spacing_mm)))))
    return ndi.binary_dilation(np.asarray(mask.array) > 0, iterations=it)


def score(disp: Volume | None, warped_labels: Volume | None, fixed_labels: Volume, moving_labels: Volume) -> dict:
    """evaluate() on a field, or the same metrics on labels a method warped itself (folding from its field, if any)."""
    from sirtjax import metrics

    if warped_labels is None:
        return evaluate(disp, fixed_labels, moving_labels)
    r = metrics.rmsd(warped_labels, fixed_labels)
    liver = np.asarray(fixed_labels.array) == 1
    fold = metrics.jacobian_stats(disp, liver).to_dict()["fraction_nonpositive"] if disp is not None else float("nan")
    return {"dice_liver": metrics.dice(np.asarray(warped_labels.array) == 1, liver),
            "rmsd_mm": r.rmsd_mm, "msd_mm": r.msd_mm, "mcd_mm": r.mcd_mm, "folding_liver": fold}


def kept_back_ids(fixed_labels: Volume, moving_labels: Volume) -> list[int]:
    """Every second landmark id (>= 2) present in both label maps, sorted: the landmarks kept back from the guidance."""
    common = set(np.unique(np.asarray(fixed_labels.array))) & set(np.unique(np.asarray(moving_labels.array)))
    return sorted(int(i) for i in common if i >= 2)[1::2]


def without_landmarks(labels: Volume, liver: Volume, ids: list[int]) -> Volume:
    """The label map with the landmarks ``ids`` removed: their voxels become liver (1) inside the liver mask, else 0."""
    arr = np.asarray(labels.array)
    hidden = np.isin(arr, ids)
    return labels.with_array(np.where(hidden, (np.asarray(liver.array) > 0).astype(arr.dtype), arr))


def kept_back_mcd(mcd_mm: dict, ids: list[int]) -> float:
    """Mean mass-centre distance (mm) over the kept-back landmarks that the warped labels kept (nearest-neighbour
    warping can lose a small one); NaN without any."""
    kept = [mcd_mm[i] for i in ids if i in mcd_mm]
    return float(np.mean(kept)) if kept else float("nan")


def field_error(disp: Volume | None, true_disp: Volume, fixed_liver: Volume) -> dict:
    """Mean and 90th percentile of |u - u_true| (mm) over the fixed liver; NaN without a field."""
    if disp is None:
        return {"field_err_mm": float("nan"), "field_err_p90_mm": float("nan")}
    err = np.linalg.norm(np.asarray(disp.array, np.float64) - np.asarray(true_disp.array, np.float64), axis=-1)
    inside = err[np.asarray(fixed_liver.array) > 0]
    return {"field_err_mm": float(inside.mean()), "field_err_p90_mm": float(np.percentile(inside, 90))}


def _mattes(fmask, mmask) -> sitk.ImageRegistrationMethod:
    """A SimpleITK registration method with Mattes MI (32 bins, 20 % random samples) inside the masks."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, 1)
    reg.SetMetricFixedMask(fmask)
    reg.SetMetricMovingMask(mmask)
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def guidance(mode: str, fl: Volume, ml: Volume, fm: Volume, mm: Volume) -> dict:
    """register()'s guidance arguments of a sirtjax preset: masks (cnn-guided), label maps (cnn-lm-guided) or none."""
    return {"cnn-guided": dict(fixed_mask=fm, moving_mask=mm),
            "cnn-lm-guided": dict(fixed_labels=fl, moving_labels=ml)}.get(mode, {})


COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


class CompileClock:
    """Seconds JAX spent tracing, lowering and compiling programs (every program, from jax.monitoring's events)."""

    def __init__(self):
        self.total_s = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration_s: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.total_s += duration_s


@functools.lru_cache(maxsize=1)
def compile_clock() -> CompileClock:
    """The process's one CompileClock (its listener is registered on first use)."""
    return CompileClock()


def run_sirtjax(mode, f, m, fl, ml, fm, mm, config: RegistrationConfig):
    """sirtjax's field and times: wall, the level steps' compile and run (its diagnostics) and compile_all_s, the
    tracing and compiling of every program in the call (the steps and the small programs that prepare and finish
    the levels, compiled again for each new grid shape; wall - compile_all_s is the time a warm process takes)."""
    clock = compile_clock()
    start_compile_s = clock.total_s
    t0 = time.perf_counter()
    res = register(f, m, config=config, **guidance(mode, fl, ml, fm, mm))
    wall = time.perf_counter() - t0
    st = res.diagnostics["stages"]
    return res.displacement, None, {"wall_s": wall, "compile_s": sum(s["compile_s"] for s in st),
                                    "run_s": sum(s["run_s"] for s in st), "compile_all_s": clock.total_s - start_compile_s}


def run_simpleitk(f, m, fm, mm):
    """Affine (moments of the masks) then B-spline (40 mm mesh), Mattes MI 32 bins, metric masks."""
    fi, mi = sitk.Cast(to_sitk(f), sitk.sitkFloat32), sitk.Cast(to_sitk(m), sitk.sitkFloat32)
    fmask = to_sitk(fm.with_array(dilated(fm, 15).astype(np.uint8)))
    mmask = to_sitk(mm.with_array(dilated(mm, 15).astype(np.uint8)))
    t0 = time.perf_counter()
    init = sitk.CenteredTransformInitializer(to_sitk(fm), to_sitk(mm), sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = _mattes(fmask, mmask)
    reg.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, 200)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SetInitialTransform(init, inPlace=False)
    affine = reg.Execute(fi, mi)
    mesh = [max(1, int(sz * sp / 40.0)) for sz, sp in zip(fi.GetSize(), fi.GetSpacing())]
    bs = sitk.BSplineTransformInitializer(fi, mesh)
    reg2 = _mattes(fmask, mmask)
    reg2.SetOptimizerAsLBFGSB(1e-5, 100)
    reg2.SetShrinkFactorsPerLevel([2, 1])
    reg2.SetSmoothingSigmasPerLevel([1, 0])
    reg2.SetMovingInitialTransform(affine)
    reg2.SetInitialTransform(bs, inPlace=True)
    reg2.Execute(fi, mi)
    tx = sitk.CompositeTransform([affine, bs])
    wall = time.perf_counter() - t0
    field = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, fi.GetSize(), fi.GetOrigin(), fi.GetSpacing(), fi.GetDirection())
    disp = from_sitk(field)
    disp = disp.with_array(np.asarray(disp.array, np.float32))
    return disp, None, {"wall_s": wall}


def centroid_shifted(vol: Volume, translation_mm: np.ndarray) -> Volume:
    """vol with its origin moved by -translation_mm: an initial translation applied to a moving image."""
    return Volume(vol.array, vol.spacing_mm, np.asarray(vol.origin_mm, np.float64) - translation_mm, vol.direction)


def mask_centre_offset(fm: Volume, mm: Volume) -> np.ndarray:
    """Moving minus fixed liver-mask centre of mass (3,) mm: the peers' initial translation."""
    from sirtjax.volume import centroid_mm

    return centroid_mm(mm, np.asarray(mm.array) > 0) - centroid_mm(fm, np.asarray(fm.array) > 0)


def run_elastix(f, m, fm, mm, ml):
    """elastix default affine + B-spline maps (itk-elastix), labels by transformix (order 0), and its field.

    elastix's own CenterOfGravity initialisation fails on these pairs (the metric masks do not
    overlap), so the moving image, mask and labels start translated by the mask centres of mass
    (the same information the guided sirtjax modes and SimpleITK's MOMENTS initialiser use). No
    metric masks: a moving mask makes itk-elastix 5.4 reject every sample ("Too many samples map
    outside moving image buffer: 0 / 368") even when the masks overlap, and with the fixed mask
    alone (liver + 15 mm) its default affine diverges (seed 1, diag CT: liver Dice 0.30 after the
    affine, 0.92 without the mask).
    """
    import itk

    def to_itk(vol, dtype=np.float32):
        img = itk.image_from_array(np.ascontiguousarray(np.asarray(vol.array, dtype)))
        img.SetSpacing(np.asarray(vol.spacing_mm, float).tolist())
        img.SetOrigin(np.asarray(vol.origin_mm, float).tolist())
        img.SetDirection(itk.matrix_from_array(np.asarray(vol.direction, float)))
        return img

    po = itk.ParameterObject.New()
    for kind in ("affine", "bspline"):
        p = po.GetDefaultParameterMap(kind, 3)
        if kind == "bspline":
            p["FinalGridSpacingInPhysicalUnits"] = ["40"]
        po.AddParameterMap(p)
    t0 = time.perf_counter()
    shift = mask_centre_offset(fm, mm)
    m, ml = centroid_shifted(m, shift), centroid_shifted(ml, shift)
    _, params = itk.elastix_registration_method(to_itk(f), to_itk(m), parameter_object=po, log_to_console=False)
    wall = time.perf_counter() - t0
    for i in range(params.GetNumberOfParameterMaps()):
        params.SetParameter(i, "FinalBSplineInterpolationOrder", "0")
        params.SetParameter(i, "ResultImagePixelType", "short")
    warped = itk.transformix_filter(to_itk(ml, np.float32), params)
    arr = np.rint(itk.array_from_image(warped)).astype(np.uint8)
    with tempfile.TemporaryDirectory() as tmp:  # transformix writes deformationField.nii there
        d = itk.array_from_image(itk.transformix_deformation_field(to_itk(m), params, output_directory=tmp))
    field = f.with_array((d + shift[None, None, None, :]).astype(np.float32))  # back from the centred moving image
    return field, f.with_array(arr), {"wall_s": wall}


def run_ants(f, m, fm, mm, ml):
    """ANTsPy SyN (affine + SyN, Mattes MI, fixed metric mask), labels by nearest neighbour.

    The moving image and labels start translated by the mask centres of mass, as for elastix, and
    ANTs' own initialisation is off (``initial_transform="Identity"``). Its default,
    ``[fixed, moving, 1]``, aligns the images' intensity centres of mass. On a CT in Hounsfield units
    (air -1000) that centre is not the body's, and it undid the mask alignment of MR pairs
    (round 16, seeds 7 and 10: liver Dice 0.21 and 0.15; with Identity 0.88 and 0.94).
    """
    import ants

    def to_ants(vol):
        img = ants.from_numpy(np.asarray(vol.array, np.float32).transpose(2, 1, 0).copy(),
                              origin=np.asarray(vol.origin_mm, float).tolist(),
                              spacing=np.asarray(vol.spacing_mm, float).tolist(),
                              direction=np.asarray(vol.direction, float))
        return img

    t0 = time.perf_counter()
    shift = mask_centre_offset(fm, mm)
    m, ml = centroid_shifted(m, shift), centroid_shifted(ml, shift)
    fa, ma = to_ants(f), to_ants(m)
    reg = ants.registration(fa, ma, type_of_transform="SyN", initial_transform="Identity", mask=to_ants(fm.with_array(dilated(fm, 15).astype(np.float32))))
    wall = time.perf_counter() - t0
    warped = ants.apply_transforms(fa, to_ants(ml), reg["fwdtransforms"], interpolator="nearestNeighbor")
    arr = np.rint(warped.numpy().transpose(2, 1, 0)).astype(np.uint8)
    return None, f.with_array(arr), {"wall_s": wall}


def run_method(method, f, m, fl, ml, fm, mm, overrides: dict | None = None, guide: tuple[Volume, Volume] | None = None):
    """(field or None, warped labels or None, timings) of one method on one pair; overrides change a sirtjax preset.

    ``guide``: the fixed and moving label maps a sirtjax preset is guided by, when not ``fl`` and ``ml`` (the
    label maps the peers warp for scoring)."""
    if method in PRESETS:
        config = config_from_dict(with_settings(json.loads(json.dumps(dataclasses.asdict(PRESETS[method]))), overrides or {}))
        return run_sirtjax(method, f, m, *(guide or (fl, ml)), fm, mm, config)
    if method == "simpleitk":
        return run_simpleitk(f, m, fm, mm)
    if method == "elastix":
        return run_elastix(f, m, fm, mm, ml)
    if method == "ants":
        return run_ants(f, m, fm, mm, ml)
    raise SystemExit(f"unknown method {method}")


def seed_range(text: str) -> list[int]:
    """Phantom seeds from ``"A-B"`` (inclusive) or ``"A"``."""
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def parse_overrides(settings: list[str]) -> dict:
    """``--set KEY=VALUE`` strings (VALUE as JSON) as a dict of settings by path in the config's JSON form: dotted,
    list items by index (``affine.iterations``, ``stages.-1.w_reg``)."""
    return {k: json.loads(v) for k, _, v in (kv.partition("=") for kv in settings)}


def with_settings(values: dict, settings: dict) -> dict:
    """The JSON form of a config, ``values``, with each setting of :func:`parse_overrides` set in place."""
    for path, value in settings.items():
        *parents, last = path.split(".")
        node = values
        for name in parents:
            node = node[int(name)] if isinstance(node, list) else node[name]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return values


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1-6")
    ap.add_argument("--moving", default="diag_ct,diag_mr", help="moving images; diag_ct_mrlike: the diagnostic CT remapped "
                    "to a T1-like MR (mr_like)")
    ap.add_argument("--methods", default="truth,image-based,cnn-guided,cnn-lm-guided,simpleitk,elastix,ants")
    ap.add_argument("--size", default="small", choices=["small", "full"])
    ap.add_argument("--out", default="benchmarks/registration/results")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="change a sirtjax preset setting")
    ap.add_argument("--keep-back", action="store_true",
                    help="guide with every other landmark and score the rest (kept_back_mcd_mm)")
    a = ap.parse_args()
    overrides = parse_overrides(a.set)
    tag = f"[{';'.join(a.set)}]" if a.set else ""
    seeds = seed_range(a.seeds)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / f"rows_{a.size}.csv"
    cfg = PhantomConfig.small() if a.size == "small" else PhantomConfig()
    metrics = ("dice_liver", "rmsd_mm", "msd_mm", "kept_back_mcd_mm", "folding_liver", "field_err_mm", "field_err_p90_mm")
    fields = ["size", "moving", "seed", "method", *metrics, "wall_s", "compile_s", "run_s", "compile_all_s", "error"]
    with open(rows_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for seed in seeds:
            study = generate_study(seed, cfg)
            for mv in a.moving.split(","):
                base = mv.removesuffix(MR_LIKE)  # its grid, labels and true field
                f, m = study.images["maa_ct"], study.images[base]
                m = mr_like(m, np.random.default_rng(seed)) if mv.endswith(MR_LIKE) else m
                fl, ml = study.images["maa_ct_labels"], study.images[f"{base}_labels"]
                fm, mm = study.images["maa_ct_liver"], study.images[f"{base}_liver"]
                truth = true_displacement(study.truth, f, moving=base)
                kept = kept_back_ids(fl, ml) if a.keep_back else []
                guide = (without_landmarks(fl, fm, kept), without_landmarks(ml, mm, kept))
                for method in a.methods.split(","):
                    try:
                        disp, warped, t = (truth, None, {}) if method == "truth" else run_method(method, f, m, fl, ml, fm, mm,
                                                                                                 overrides, guide)
                        s = score(disp, warped, fl, ml)
                        s = {**s, "kept_back_mcd_mm": kept_back_mcd(s["mcd_mm"], kept), **field_error(disp, truth, fm)}
                        error = ""
                    except Exception as exc:  # a failing peer is a result (recorded), not the end of the run
                        s = dict.fromkeys(metrics, float("nan"))
                        t, error = {}, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                    row = {"size": a.size, "moving": mv, "seed": seed, "method": method + (tag if method in PRESETS else ""),
                           **{k: s[k] for k in metrics}, **t, "error": error}
                    w.writerow(row)
                    fh.flush()
                    print(json.dumps(row), flush=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    (out / f"uptime_{a.size}.txt").write_text(f"{load}\ncommit {commit}\n")


if __name__ == "__main__":
    main()
