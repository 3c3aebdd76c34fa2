"""The shipped default liver model on phantom studies of seeds it never saw (trained on 0-15, validated on 100-101).

The CT test runs in the default suite (one full phantom study, one image through `sirtjax segment`);
the others are marked slow (three more studies, all four images each). Retraining: the model card
in sirtjax/data/models/liver.
"""

import numpy as np
import pytest

from sirtjax.io import read_volume, write_volume
from sirtjax.metrics import dice
from sirtjax.models import load_model
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.segmentation import segment_liver
from sirtjax.volume import same_grid


@pytest.fixture(scope="module")
def unseen_study():
    return generate_study(300, PhantomConfig())


def test_default_model_ct_through_cli(unseen_study, tmp_path, capsys):
    """`sirtjax segment` on a contrast CT: mask on the image's own grid, liver DSC >= 0.90 (issue 5)."""
    from sirtjax.cli import main

    write_volume(unseen_study.images["diag_ct"], tmp_path / "ct.nii.gz")
    main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "liver.nii.gz"), "--modality", "ct"])
    assert "liver:" in capsys.readouterr().out
    mask = read_volume(tmp_path / "liver.nii.gz")
    ref = unseen_study.images["diag_ct_liver"]
    assert same_grid(mask, ref)
    assert dice(np.asarray(mask.array), np.asarray(ref.array)) >= 0.90


@pytest.mark.slow
def test_default_model_mr_oblique(unseen_study):
    """T1 MR on an oblique grid (phantom diag_mr): liver DSC >= 0.90."""
    model, spec = load_model("liver")
    mask = segment_liver(model, spec, unseen_study.images["diag_mr"], modality="mr")
    assert dice(np.asarray(mask.array), np.asarray(unseen_study.images["diag_mr_liver"].array)) >= 0.90


@pytest.mark.slow
@pytest.mark.parametrize("seed", [301, 302])
def test_default_model_all_images_more_seeds(seed):
    study = generate_study(seed, PhantomConfig())
    model, spec = load_model("liver")
    for name, modality in (("maa_ct", "ct"), ("diag_ct", "ct"), ("y90_ct", "ct"), ("diag_mr", "mr")):
        mask = segment_liver(model, spec, study.images[name], modality=modality)
        assert dice(np.asarray(mask.array), np.asarray(study.images[name + "_liver"].array)) >= 0.90, name


def test_default_lesion_model_through_cli(unseen_study, tmp_path, capsys):
    """`sirtjax segment --target lesions` on the T1 MR (oblique grid) of an unseen seed, the liver segmented first:
    one id per lesion on the image's grid, the lesions of 20 mm and more found, pooled DSC over the lesions >= 0.2
    (a regression floor: false positives keep it low). The contrast CT of this seed is where the model is weak
    (benchmarks/segmentation/results/lesions.md)."""
    from sirtjax.cli import main
    from sirtjax.metrics import lesion_detection

    im = unseen_study.images
    write_volume(im["diag_mr"], tmp_path / "mr.nii.gz")
    main(["segment", str(tmp_path / "mr.nii.gz"), "-o", str(tmp_path / "lesions.nii.gz"), "--target", "lesions",
          "--modality", "mr"])
    out = capsys.readouterr().out
    pred, ref = read_volume(tmp_path / "lesions.nii.gz"), im["diag_mr_lesions"]
    assert same_grid(pred, ref) and f"lesions: {int(np.asarray(pred.array).max())} in the liver (liver segmented first)" in out
    det = lesion_detection(pred, ref)
    big = [found for found, ml in zip(det.ref_detected, det.ref_volumes_ml) if ml >= np.pi / 6 * 20.0**3 / 1000]
    assert big and all(big)
    assert dice(np.asarray(pred.array) > 0, np.asarray(ref.array) > 0) >= 0.2
    # every lesion kept is one the image shows (Rose's k = 5), and it says so
    cnrs = [line.rsplit(" ", 1)[1] for line in out.splitlines() if "contrast-to-noise" in line and "lesion " in line]
    assert len(cnrs) == int(np.asarray(pred.array).max()) and all(float(c) >= 5 for c in cnrs if c != "-")  # '-': unmeasured, kept
    # --threshold 0.8 --min-cnr 0: every component above 0.8 in the probability, whatever the image shows
    main(["segment", str(tmp_path / "mr.nii.gz"), "-o", str(tmp_path / "strict.nii.gz"), "--target", "lesions",
          "--modality", "mr", "--threshold", "0.8", "--min-cnr", "0", "--probability", str(tmp_path / "p.nii.gz")])
    strict, prob = np.asarray(read_volume(tmp_path / "strict.nii.gz").array) > 0, np.asarray(read_volume(tmp_path / "p.nii.gz").array)
    assert np.all(prob[strict] >= 0.8) and strict.sum() >= 0.9 * (prob >= 0.8).sum()  # less only the components under 0.03 ml
    assert np.all(prob[np.asarray(pred.array) > 0] > 0.5)


def test_default_regseg_model_through_cli(unseen_study, tmp_path, capsys):
    """`sirtjax segment MAA_CT --reference DIAG_CT --reference-mask LIVER --field F` with the shipped registration-
    segmentation network: the liver DSC on the non-contrast CT >= 0.965 (above the 0.962 of its affine pre-alignment
    alone on this seed, benchmarks/regseg: the network must add to it), and SimpleITK, applying the written field to
    the reference mask, gives the same mask (the field is in the ITK convention, fixed world -> reference world)."""
    import SimpleITK as sitk

    from sirtjax.cli import main

    im = unseen_study.images
    paths = {name: write_volume(im[name], tmp_path / f"{name}.nii.gz") for name in ("maa_ct", "diag_ct", "diag_ct_liver")}
    main(["segment", str(paths["maa_ct"]), "--reference", str(paths["diag_ct"]), "--reference-mask", str(paths["diag_ct_liver"]),
          "-o", str(tmp_path / "liver.nii.gz"), "--field", str(tmp_path / "field.nii.gz")])
    assert "carried across by regseg" in capsys.readouterr().out
    mask = read_volume(tmp_path / "liver.nii.gz")
    assert same_grid(mask, im["maa_ct"])
    assert dice(np.asarray(mask.array), np.asarray(im["maa_ct_liver"].array)) >= 0.965
    field = sitk.ReadImage(str(tmp_path / "field.nii.gz"), sitk.sitkVectorFloat64)
    reference = sitk.Cast(sitk.ReadImage(str(paths["diag_ct_liver"])), sitk.sitkFloat32)
    fixed = sitk.ReadImage(str(paths["maa_ct"]))
    warped = sitk.Resample(reference, fixed, sitk.DisplacementFieldTransform(field), sitk.sitkLinear, 0.0)
    itk_mask = sitk.GetArrayFromImage(warped) >= 0.5
    assert dice(itk_mask, np.asarray(mask.array)) > 0.995


@pytest.mark.slow
def test_default_model_on_a_noisy_ct_is_noise_matched():
    """An MAA CT at 3x the CT noise (75 HU, seed 302). Unfiltered, a model trained on correlated noise must reach 0.90
    (stage 3, trained on white noise: 0.81-0.84 on seeds 100-101 and 300-301; stage 4: 0.921; stage 5: 0.949). The
    declared noise index engages the total-variation denoising, which must lift the DSC above 0.93 and by 0.005 over
    the unfiltered input (stage 4: 0.944 against 0.921; stage 5: 0.956 against 0.949, and on validation seeds 100-105
    0.939 against 0.928 on average)."""
    study = generate_study(302, PhantomConfig(ct_noise_hu=75.0))
    model, spec = load_model("liver")
    truth = np.asarray(study.images["maa_ct_liver"].array)
    matched = dice(np.asarray(segment_liver(model, spec, study.images["maa_ct"], modality="ct").array), truth)
    unmatched_spec = {k: v for k, v in spec.items() if k != "ct_noise_index_hu"}
    raw = dice(np.asarray(segment_liver(model, unmatched_spec, study.images["maa_ct"], modality="ct").array), truth)
    assert raw >= 0.90 and matched >= 0.93 and matched >= raw + 0.005, (matched, raw)


@pytest.mark.slow
def test_default_model_on_a_noisy_mr_like_remap_is_noise_matched():
    """The MR-like remap of seed 300's MAA CT (its 12-25 HU of noise multiplied by the map's slope) reads about 0.07
    window units of noise, above the declared 0.03 by more than 25 %: denoised after windowing, the liver reaches
    0.945 against 0.922 without with stage 4 (stress table, 2026-11-28; stage 5: 0.955 matched). The match must lift it
    above 0.93 and by 0.01."""
    from sirtjax.phantom.mr_like import mr_like

    study = generate_study(300)
    image = mr_like(study.images["maa_ct"], np.random.default_rng(300))
    model, spec = load_model("liver")
    truth = np.asarray(study.images["maa_ct_liver"].array)
    found = []
    matched = dice(np.asarray(segment_liver(model, spec, image, modality="mr", on_noise=found.append).array), truth)
    raw_spec = {k: v for k, v in spec.items() if k != "mr_noise_index"}
    raw = dice(np.asarray(segment_liver(model, raw_spec, image, modality="mr").array), truth)
    assert found[0].unit == "window units" and found[0].tv_weight is not None
    assert matched >= 0.93 and matched >= raw + 0.01, (matched, raw)
