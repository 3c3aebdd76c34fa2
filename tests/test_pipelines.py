"""plan() and verify() on small phantom studies, checked against dosimetry with the phantom's true masks."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from sirtjax import dosimetry
from sirtjax.phantom import PhantomConfig, generate_study
from sirtjax.pipelines import Anatomy, Session, StudyData, WorkflowOptions, choose_preset, liver_of, plan, verify
from sirtjax.pipelines.mapping import landmark_labels
from sirtjax.pipelines.plan import W_REG_SPAN, cut_by_field_of_view
from sirtjax.pipelines.planned import planned_from_result
from sirtjax.pipelines.report import workflow_report
from sirtjax.registration.config import Overrides
from sirtjax.registration.presets import PRESETS
from sirtjax.volume import make_volume

# Few iterations on one 12 mm level, no image stage: enough for the liver-guided alignment of a 6 mm phantom.
FAST = WorkflowOptions(registration=Overrides(levels=1, finest_mm=12.0, nonrigid_levels=1, iterations=20, image_stages=False))
# Larger lesions than the default range so that each covers several voxels of the 6 mm CT and 8.8 mm SPECT.
CONFIG = PhantomConfig.small(lesion_diameter_mm=(25.0, 45.0), n_lesions=(2, 3))


def anatomy(images, name, modality, kinds):
    return Anatomy(name, modality, images[name], **{k: images[f"{name}_{k}"] for k in kinds})


@pytest.fixture(scope="module")
def study():
    return generate_study(3, CONFIG)


@pytest.fixture(scope="module")
def workflows(study):
    im = study.images
    truth = study.truth
    maa = Session(anatomy(im, "maa_ct", "CT", ("liver", "lungs", "labels")), im["maa_spect"], "maa_spect")
    y90 = Session(anatomy(im, "y90_ct", "CT", ("liver", "labels")), im["y90_pet"], "y90_pet")
    diagnostics = (anatomy(im, "diag_ct", "CT", ("liver", "lesions", "labels")),)
    data = StudyData("phantom", truth["patient"], {"y90_injected_gbq": truth["activities"]["y90_gbq"]},
                     {"normal_liver": 40.0, "whole_liver": 50.0}, truth["lung_shunt_fraction"]["maa"])
    p = plan(maa, diagnostics, data, FAST, key=jax.random.key(0))
    v = verify(y90, diagnostics, data, planned_from_result(p), FAST, key=jax.random.key(1))
    return p, v, data


def records(result):
    return {r["name"]: r for r in result.report["vois"]}


def test_plan_maps_lesions_by_landmark_guided_registration(workflows):
    p, v, _ = workflows
    assert p.report["vois"]["lesions"] == "mapped from diag_ct (cnn-lm-guided registration)"
    assert v.report["vois"]["lesions"] == "mapped from diag_ct (cnn-lm-guided registration)"
    for r in (*p.registrations, *v.registrations):
        assert r.checks.liver_dice > 0.85  # liver-guided registration of the 6 mm phantom
        assert r.checks.jacobian.fraction_nonpositive < 1e-3  # the spring model keeps it invertible


def assert_agrees_with_truth(ours: dict, truth: dict) -> None:
    """Workflow VOI records (name -> record) against the same dosimetry on the true masks: mean, D70, V100."""
    print({n: [(ours[n][k], truth[n][k]) for k in ("mean_gy", "D70_gy", "V100_pct")] for n in ours if n in truth})
    for name in ("liver", "normal_liver"):
        assert ours[name]["mean_gy"] == pytest.approx(truth[name]["mean_gy"], rel=0.03)  # liver given: voxelisation only
        assert ours[name]["D70_gy"] == pytest.approx(truth[name]["D70_gy"], rel=0.05)
        assert ours[name]["V100_pct"] == pytest.approx(truth[name]["V100_pct"], abs=2.0)
    lesions = [n for n in ours if n.startswith("lesion_")]
    assert lesions and set(lesions) <= set(truth)
    for name in lesions:
        # registration (a voxel or two at 6 mm) + emission blur at the shifted lesion edge
        assert ours[name]["mean_gy"] == pytest.approx(truth[name]["mean_gy"], rel=0.25)
        assert ours[name]["D70_gy"] == pytest.approx(truth[name]["D70_gy"], rel=0.3)
        assert ours[name]["V100_pct"] == pytest.approx(truth[name]["V100_pct"], abs=30.0)


def test_plan_agrees_with_true_masks(study, workflows):
    """Planned activity, mean doses, D70 and V100 against the same dosimetry on the phantom's TRUE MAA CT masks.

    Differences come from the registration (lesions mapped from the diagnostic CT: a voxel or two
    of misplacement at 6 mm), nearest-neighbour voxelisation on the 8.8 mm SPECT grid and SPECT
    blur (a shifted lesion VOI samples the blurred edge).
    """
    p, _, data = workflows
    im = study.images
    lsf = data.lung_shunt_fraction
    ref = dosimetry.voxel_dosimetry(im["maa_spect"], im["maa_ct_liver"], lesions=im["maa_ct_lesions"],
                                    activity_gbq=p.planned_activity_gbq, lung_shunt_fraction=lsf)
    assert_agrees_with_truth(records(p.dose), records(ref))


def test_planned_activity_agrees_with_truth(study, workflows):
    """Partition activity against the formula with the phantom's true T/N ratios, true-mask volumes and true LSF.

    The normal-liver mass dominates S = sum TN_i M_i + M_N, so the SPECT's underestimate of T/N
    (blur spills lesion counts into normal liver) moves the activity by a few percent only.
    """
    p, _, data = workflows
    im = study.images
    ml = float(np.prod(im["maa_ct"].spacing_mm)) / 1000.0
    lesions = np.asarray(im["maa_ct_lesions"].array)
    liver = (np.asarray(im["maa_ct_liver"].array) > 0) | (lesions > 0)
    tn = {les["instance"]: les["tn_ratio_maa"] for les in study.truth["lesions"]}
    ids = [i for i in np.unique(lesions) if i > 0]
    tumour_kg = [np.count_nonzero(lesions == i) * ml * 1.03e-3 for i in ids]
    normal_kg = np.count_nonzero(liver & (lesions == 0)) * ml * 1.03e-3
    expected = dosimetry.partition(40.0, normal_kg, tumour_kg, [tn[int(i)] for i in ids],
                                   lung_shunt_fraction=data.lung_shunt_fraction)
    partition = next(pr for pr in p.prescriptions if pr.method == "partition")
    assert p.planned_activity_gbq == partition.activity_gbq
    assert partition.activity_gbq == pytest.approx(expected.activity_gbq, rel=0.05)
    mono = next(pr for pr in p.prescriptions if pr.method == "mono-compartment")
    whole_kg = np.count_nonzero(liver) * ml * 1.03e-3
    assert mono.activity_gbq == pytest.approx(50.0 * whole_kg / (49.43 * (1 - data.lung_shunt_fraction)), rel=0.03)
    assert [pr.method for pr in p.prescriptions] == ["partition", "mono-compartment", "bsa"]


def test_verify_agrees_with_true_masks(study, workflows):
    """Verification mean dose, D70 and V100 per VOI against the PET dosimetry with the TRUE 90Y CT masks.

    Tolerances and reasons as for the plan: the liver is given (only the mapped lesions' boundary and
    nearest-neighbour voxelisation on the PET grid differ); lesions are mapped from the diagnostic CT
    by registration (a voxel or two of misplacement at 6 mm) and sample the blurred PET edge.
    """
    _, v, _ = workflows
    im = study.images
    ref = dosimetry.voxel_dosimetry(im["y90_pet"], im["y90_ct_liver"], lesions=im["y90_ct_lesions"], input_kind="bq-per-ml")
    assert_agrees_with_truth(records(v.dose), records(ref))


def test_comparison_with_plan(workflows):
    p, v, data = workflows
    plan_liver = records(p.dose)["liver"]
    verif_liver = records(v.dose)["liver"]
    liver = next(r for r in v.comparison if r.name == "liver")
    assert liver["mean_gy"].plan == plan_liver["mean_gy"]
    assert liver["mean_gy"].difference == pytest.approx(verif_liver["mean_gy"] - plan_liver["mean_gy"])
    # the plan recomputed at the injected activity: dose is linear in the activity (same LSF, same map)
    ratio = data.activities["y90_injected_gbq"] / p.planned_activity_gbq
    at_inj = next(r for r in v.comparison_at_injected if r.name == "liver")
    assert at_inj["mean_gy"].plan == pytest.approx(plan_liver["mean_gy"] * ratio, rel=1e-4)  # float32 sums
    assert at_inj["D70_gy"].plan == pytest.approx(plan_liver["D70_gy"] * ratio, rel=1e-4)


def test_given_target_lesions_need_no_registration(study):
    im = study.images
    maa = Session(anatomy(im, "maa_ct", "CT", ("liver", "lesions")), im["maa_spect"], "maa_spect")
    diagnostics = (anatomy(im, "diag_ct", "CT", ("liver", "lesions")),)
    data = StudyData("phantom", {}, {}, {})
    p = plan(maa, diagnostics, data, FAST, key=jax.random.key(0))
    assert p.registrations == () and p.report["vois"]["lesions"] == "given on maa_ct"
    assert p.report["lung_shunt"]["source"] == "assumed 0"
    assert any(w.code == "lung_shunt_assumed_zero" for w in p.warnings)
    assert p.report["target_doses"]["normal_liver"] == {"dose_gy": 40.0, "source": "default"}
    assert [pr.method for pr in p.prescriptions] == ["partition", "mono-compartment"]  # no height/weight: no BSA


def _true_lesion_segmenter(images, seen):
    """A stand-in LesionSegmenter: the phantom's true lesions of the image it is given (found by identity)."""
    from sirtjax.segmentation.lesions import LesionSegmentation, describe_lesions

    def segment(image, modality, liver):
        name = next(k for k, v in images.items() if v is image)
        seen.append((name, modality, int(np.asarray(liver.array).sum())))
        labels = np.asarray(images[f"{name}_lesions"].array).astype(np.int32)
        prob = (labels > 0).astype(np.float32)
        cnr = np.concatenate([[np.nan], 10.0 + np.arange(labels.max())])  # a contrast-to-noise ratio per id: 10, 11, ...
        return LesionSegmentation(image.with_array(labels), image.with_array(prob), describe_lesions(labels, prob, 0.2, cnr))

    return segment


def test_lesions_are_found_when_none_are_given(study):
    """No lesions anywhere: the lesion segmenter runs on the first diagnostic image in its liver, and the result is
    mapped by registration; without a diagnostic image it runs on the session's own image; the report lists them."""
    im = study.images
    maa = Session(anatomy(im, "maa_ct", "CT", ("liver",)), im["maa_spect"], "maa_spect")
    diagnostics = (anatomy(im, "diag_ct", "CT", ("liver",)),)
    data = StudyData("phantom", {}, {}, {})
    seen = []
    options = dataclasses.replace(FAST, lesion_segmenter=_true_lesion_segmenter(im, seen))
    p = plan(maa, diagnostics, data, options, key=jax.random.key(0))
    n = int(np.asarray(im["diag_ct_lesions"].array).max())
    assert seen == [("diag_ct", "CT", int(np.asarray(im["diag_ct_liver"].array).sum()))]
    assert p.report["vois"]["lesions"] == f"segmented on diag_ct by the lesion model ({n} found), mapped by cnn-guided registration"
    assert [f["id"] for f in p.report["lesions_found"]] == list(range(1, n + 1)) and len(p.registrations) == 1
    assert len(p.compartments.tumour_names) == n
    seen.clear()
    alone = plan(maa, (), data, options, key=jax.random.key(0))
    assert seen[0][0] == "maa_ct" and alone.registrations == ()
    assert alone.report["vois"]["lesions"].startswith("segmented on maa_ct by the lesion model")
    html = workflow_report({"name": "phantom", "series": {}}, alone)
    assert "Lesions found by the lesion model" in html and "lesion_1" in html and "Contrast-to-noise" in html
    assert [f["cnr"] for f in alone.report["lesions_found"]] == [10.0 + i for i in range(len(alone.report["lesions_found"]))]
    quiet = plan(maa, (), data, FAST, key=jax.random.key(0))
    assert quiet.report["vois"]["lesions"] == "none" and "lesions_found" not in quiet.report


def test_liver_needs_a_mask_or_a_segmenter(study):
    im = study.images
    bare = Anatomy("maa_ct", "CT", im["maa_ct"])
    with pytest.raises(ValueError, match="no liver mask given and no liver segmentation model"):
        liver_of(bare, WorkflowOptions())
    segmented = im["maa_ct_liver"]
    mask, source = liver_of(bare, dataclasses.replace(WorkflowOptions(), segmenter=lambda vol, modality: segmented))
    assert source == "segmented" and np.array_equal(np.asarray(mask.array), np.asarray(segmented.array) != 0)
    empty = segmented.with_array(np.zeros(segmented.shape, np.uint8))
    with pytest.raises(ValueError, match="empty"):
        liver_of(dataclasses.replace(bare, liver=empty), WorkflowOptions())


def test_an_implausible_segmented_liver_stops_unless_accepted(study):
    """A segmented liver outside 0.6-4.5 L stops the workflow with one line naming the image and the volume, unless
    accepted; a given mask of any size is the user's and goes on (its warning comes later, in session_warnings)."""
    im = study.images
    bare = Anatomy("maa_ct", "CT", im["maa_ct"])
    liver = np.asarray(im["maa_ct_liver"].array)
    sliver = im["maa_ct_liver"].with_array((liver != 0) & (np.cumsum(liver != 0, axis=0) <= 1))  # one voxel layer
    options = dataclasses.replace(WorkflowOptions(), segmenter=lambda vol, modality: sliver)
    with pytest.raises(ValueError, match=r"^maa_ct: the segmented liver is \d+ ml, outside 600-4500 ml.*--accept-implausible"):
        liver_of(bare, options)
    mask, source = liver_of(bare, dataclasses.replace(options, accept_implausible_liver=True))
    assert source == "segmented" and np.array_equal(np.asarray(mask.array), np.asarray(sliver.array))
    assert liver_of(dataclasses.replace(bare, liver=sliver), WorkflowOptions())[1] == "given"
    assert liver_of(bare, dataclasses.replace(options, segmenter=lambda vol, modality: im["maa_ct_liver"]))[1] == "segmented"


def test_a_reference_ct_gives_its_liver_before_the_segmenter(study):
    """With a reference segmenter, a session CT without a mask takes the given liver of the first diagnostic CT;
    an MR reference, a mask-less reference or an MR session falls back to the segmenter."""
    im = study.images
    bare = Anatomy("maa_ct", "CT", im["maa_ct"])
    calls = []

    def carried(image, reference, reference_liver):
        calls.append((image.shape, reference.shape, int(np.asarray(reference_liver.array).sum())))
        return im["maa_ct_liver"]

    options = dataclasses.replace(WorkflowOptions(), segmenter=lambda vol, modality: im["maa_ct_liver"], reference_segmenter=carried)
    refs = (Anatomy("diag_mr", "MR", im["diag_mr"], liver=im["diag_mr_liver"]), Anatomy("diag_ct", "CT", im["diag_ct"]),
            anatomy(im, "diag_ct", "CT", ("liver",)))
    _, source = liver_of(bare, options, references=refs)
    assert source == "carried from the given liver of diag_ct by the registration-segmentation network"
    assert calls == [(im["maa_ct"].shape, im["diag_ct"].shape, int(np.asarray(im["diag_ct_liver"].array).sum()))]
    assert liver_of(bare, options, references=refs[:2])[1] == "segmented"
    assert liver_of(Anatomy("diag_mr", "MR", im["diag_mr"]), options, references=refs)[1] == "segmented"


def test_preset_follows_the_guidance(study):
    im = study.images
    target = anatomy(im, "maa_ct", "CT", ("liver", "labels"))
    source = anatomy(im, "diag_ct", "CT", ("liver", "labels"))
    liver = im["maa_ct_liver"]
    assert choose_preset(target, source, liver, im["diag_ct_liver"]) == "cnn-lm-guided"
    no_labels = dataclasses.replace(source, labels=None)
    assert choose_preset(target, no_labels, liver, im["diag_ct_liver"]) == "cnn-guided"
    assert choose_preset(target, no_labels, liver, None) == "image-based"
    # label maps sharing only the liver (no landmark id >= 2) do not make it landmark-guided
    liver_only = source.labels.with_array((np.asarray(source.labels.array) == 1).astype(np.uint8))
    assert choose_preset(target, dataclasses.replace(source, labels=liver_only), liver, im["diag_ct_liver"]) == "cnn-guided"


def test_anatomy_rejects_masks_off_the_grid(study):
    im = study.images
    with pytest.raises(ValueError, match="not on the image grid"):
        Anatomy("maa_ct", "CT", im["maa_ct"], liver=im["diag_ct_liver"])
    with pytest.raises(ValueError, match="CT or MR"):
        Anatomy("maa_spect", "SPECT", im["maa_spect"])


def test_cut_by_field_of_view():
    a = np.zeros((5, 6, 7), np.uint8)
    a[2, 2:4, 3] = 1
    vol = make_volume(a, (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.eye(3))
    assert not cut_by_field_of_view(vol)
    a[-1, 2, 3] = 1  # touches the last slice
    assert cut_by_field_of_view(vol.with_array(a))


def test_landmark_labels_take_the_liver_in_use():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[1:3, 1:4, 1:5] = 1
    labels[2, 2, 2] = 7  # a landmark
    vol = make_volume(labels, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    liver = np.zeros_like(labels)
    liver[0:2, 0:2, 0:2] = 1  # a different (e.g. segmented) liver
    out = np.asarray(landmark_labels(vol, vol.with_array(liver)).array)
    assert out[2, 2, 2] == 7 and np.array_equal(out == 1, (liver == 1) & (labels < 2))
    assert np.array_equal(np.asarray(landmark_labels(vol, None).array), labels)


def test_demo_masks_drop_the_session_livers_when_segmenting():
    from sirtjax.pipelines.demo import DEMO_MASKS, demo_masks

    assert demo_masks(False) == DEMO_MASKS
    seg = demo_masks(True)
    assert "liver" not in seg["maa_ct"] and "liver" not in seg["y90_ct"] and "liver" in seg["diag_ct"]
    assert "labels" in seg["maa_ct"] and "lungs" in seg["maa_ct"]


def test_lesions_lost_on_the_emission_grid_are_named():
    from sirtjax.pipelines.plan import SessionVois, lesions_lost_on_emission_grid
    from sirtjax.preprocess import resample_to

    ct = np.zeros((20, 20, 20), np.uint8)
    ct[4:12, 4:12, 4:12] = 1  # 8 mm cube: survives 4 mm voxels
    ct[15, 15, 15] = 2  # a 1 mm voxel between the 4 mm voxel centres: lost
    lesions = make_volume(ct, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    spect = make_volume(np.zeros((5, 5, 5), np.float32), (4.0, 4.0, 4.0), (1.5, 1.5, 1.5), np.eye(3))
    on_spect = resample_to(lesions, spect, order=0)  # SimpleITK-equal nearest neighbour
    assert set(np.unique(np.asarray(on_spect.array))) == {0, 1}
    liver = lesions.with_array((ct > 0).astype(np.uint8))
    vois = SessionVois(liver, lesions, None, resample_to(liver, spect, order=0), on_spect, None, {})
    (w,) = lesions_lost_on_emission_grid(vois, "maa_ct", "maa_spect")
    assert w.code == "lesion_lost_on_emission_grid" and "lesion_2 (0.001 ml) on maa_ct" in w.message
    assert "lesion_1" not in w.message and w.value == 1.0
    kept = SessionVois(liver, lesions.with_array((ct == 1).astype(np.uint8)), None, vois.liver_emission, on_spect, None, {})
    assert lesions_lost_on_emission_grid(kept, "maa_ct", "maa_spect") == []


def test_plan_uncertainty_redraws_the_lesion_registration(study, workflows):
    """WorkflowOptions.uncertainty with one more registration: the ensemble's registration source, its summary in the
    report, and a nominal member equal to the plan's dose table."""
    from sirtjax.dosimetry.uncertainty import UncertaintyModel
    from sirtjax.pipelines.inputs import UncertaintyRequest

    p0, _, data = workflows
    im = study.images
    maa = Session(anatomy(im, "maa_ct", "CT", ("liver", "lungs", "labels")), im["maa_spect"], "maa_spect")
    diagnostics = (anatomy(im, "diag_ct", "CT", ("liver", "lesions", "labels")),)
    request = UncertaintyRequest(6, UncertaintyModel(calibration_rel_sd=0.05, boundary_sd_mm=1.0), registrations=1)
    p = plan(maa, diagnostics, data, dataclasses.replace(FAST, uncertainty=request), key=jax.random.key(0))
    assert p.planned_activity_gbq == p0.planned_activity_gbq  # the plan itself is unchanged by the ensemble
    u = p.report["uncertainty"]
    assert u["registrations"] == 1 and u["members"] == 6
    liver = u["vois"][0]["mean_gy"]
    assert set(liver["by_source"]) == {"calibration", "liver_boundary", "lesion_boundary", "registration"}
    check = u["registration_checks"][0]
    assert len(u["registration_checks"]) == 1 and check["liver_dice"] > 0.85
    w_reg = PRESETS[p.registrations[0].preset].main_stage.w_reg
    assert w_reg / W_REG_SPAN <= check["w_reg"] <= w_reg * W_REG_SPAN and check["w_reg"] != w_reg  # a drawn spring weight
    # landmark guidance: the registration saw a random half of the landmarks and is scored on the others
    landmarks = p.registrations[0].checks.landmarks
    assert p.registrations[0].preset == "cnn-lm-guided" and len(landmarks) >= 2
    assert len(check["held_out_landmarks"]) == len(landmarks) // 2 and set(check["held_out_landmarks"]) < set(landmarks)
    assert 0 <= check["held_out_landmark_mcd_mm"] < 12.0  # within the quick registration's 12 mm level
    assert liver["nominal"] == pytest.approx(records(p.dose)["liver"]["mean_gy"], rel=1e-4)
    # the partition prescription's target: the activity giving the normal liver its target mean in each member
    needed, target_gy = u["activity_for_target"], p.report["target_doses"]["normal_liver"]["dose_gy"]
    assert needed["voi"] == "normal_liver" and needed["target_gy"] == target_gy
    normal = records(p.dose)["normal_liver"]["mean_gy"]
    assert needed["nominal"] == pytest.approx(p.planned_activity_gbq * target_gy / normal, rel=1e-4)
    assert needed["p5"] < needed["nominal"] < needed["p95"]
    # the verification's PET dose: quantification and outlines, no lung shunt; its nominal is the PET dose table
    y90 = Session(anatomy(im, "y90_ct", "CT", ("liver", "labels")), im["y90_pet"], "y90_pet")
    from sirtjax.dosimetry.radiobiology import TissueModel

    tissues = {"normal_liver": TissueModel(2.5, 1.5, "test"), "lesion": TissueModel(10.0, 1.5, "test", alpha_per_gy=0.3)}
    v = verify(y90, diagnostics, data, planned_from_result(p),
               dataclasses.replace(FAST, uncertainty=request, radiobiology=tissues), key=jax.random.key(1))
    rb = {r.name: r for r in v.radiobiology.vois}  # the PET dose's radiobiology, every compartment modelled
    assert set(rb) == {n for n in records(v.dose) if n == "normal_liver" or n.startswith("lesion_")}
    assert all(r.eud_bed_gy is not None for n, r in rb.items() if n.startswith("lesion_"))
    uv = v.report["uncertainty"]
    assert uv["emission"] == "bq-per-ml" and "lung_shunt" not in uv["vois"][0]["mean_gy"]["by_source"]
    assert uv["vois"][0]["mean_gy"]["nominal"] == pytest.approx(records(v.dose)["liver"]["mean_gy"], rel=1e-4)
    html = workflow_report({"name": "phantom", "series": {}}, p, v)
    assert "Dose uncertainty (verification)" in html and "PET quantification sd 5 %" in html
    assert "each guided by a random half of the landmarks" in html
    assert f"target (normal liver mean {target_gy:g} Gy)" in html  # the plan's activity interval
    assert "activity_for_target" not in uv  # a PET dose has no prescription
    assert "Radiobiology (verification)" in html


def test_verify_compares_at_one_resolution_and_corrects_the_lesions_recovery(study, workflows):
    """WorkflowOptions.pet: the 8 mm PET and the 12 mm MAA SPECT blurred to 14 mm give the doses voxel_dosimetry gives
    the blurred images (scipy blurs them), the lesions' plan-verification differences shrink (the phantom draws both
    from one distribution), and the analytic curve divides each lesion's PET mean by its coefficient at 14 mm."""
    from sirtjax.dosimetry.recovery import gaussian_recovery_curve, match_resolution, sphere_recovery_coefficient
    from sirtjax.pipelines.inputs import PetQuantification

    p0, v0, data = workflows
    im = study.images
    y90 = Session(anatomy(im, "y90_ct", "CT", ("liver", "labels")), im["y90_pet"], "y90_pet")
    diagnostics = (anatomy(im, "diag_ct", "CT", ("liver", "lesions", "labels")),)
    pet = PetQuantification(14.0, 8.0, 12.0, gaussian_recovery_curve(14.0))
    v = verify(y90, diagnostics, data, planned_from_result(p0), dataclasses.replace(FAST, pet=pet), key=jax.random.key(1))
    ref = dosimetry.voxel_dosimetry(match_resolution(im["y90_pet"], 8.0, 14.0), v.vois.liver_emission,
                                    lesions=v.vois.lesions_emission, lungs=v.vois.lungs_emission, input_kind="bq-per-ml")
    peak = float(np.max(ref.dose.array))
    np.testing.assert_allclose(v.dose.dose.array, ref.dose.array, atol=1e-4 * peak)
    planned = dosimetry.voxel_dosimetry(match_resolution(im["maa_spect"], 12.0, 14.0), p0.vois.liver_emission,
                                        lesions=p0.vois.lesions_emission, lungs=p0.vois.lungs_emission,
                                        activity_gbq=p0.planned_activity_gbq, lung_shunt_fraction=p0.lung_shunt_fraction)
    assert records(v.plan.dose)["liver"]["mean_gy"] == pytest.approx(records(planned)["liver"]["mean_gy"], rel=1e-4)

    def lesion_gap(result) -> float:
        return float(np.mean([abs(c["mean_gy"].difference) for c in result.comparison_at_injected if c.name.startswith("lesion_")]))

    assert lesion_gap(v) < lesion_gap(v0)
    lesions = v.report["recovery"]["lesions"]
    assert [r.name for r in lesions] == [n for n in records(v.dose) if n.startswith("lesion_")] and lesions
    for r in lesions:
        assert r.mean_gy == records(v.dose)[r.name]["mean_gy"]
        assert r.corrected_mean_gy == pytest.approx(r.mean_gy / sphere_recovery_coefficient(r.volume_ml, 14.0), rel=1e-6)
    assert v.report["resolution"] == {"pet_fwhm_mm": 8.0, "spect_fwhm_mm": 12.0, "matched_to_fwhm_mm": 14.0}
    html = workflow_report({"name": "phantom", "series": {}}, p0, v)
    assert "Lesion recovery (90Y PET)" in html and "blurred to 14 mm FWHM first" in html
    with pytest.raises(ValueError, match="needs the PET's and the SPECT's resolutions"):
        PetQuantification(10.0, 12.0, 8.0)


def test_landmark_error_is_the_mass_centre_distance_left_by_the_field():
    """landmark_error_mm on an oblique, anisotropic grid: the shift between the label maps without a field, and about
    0 with the field that undoes it (ITK convention)."""
    from sirtjax.pipelines.mapping import landmark_error_mm

    direction = np.array([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0], [0.0, 0.8, -0.6]])
    spacing = (2.0, 3.0, 4.0)
    labels = np.zeros((16, 18, 20), np.uint8)
    labels[4:8, 5:9, 4:8], labels[9:12, 10:14, 11:15] = 2, 3
    target = make_volume(labels, spacing, (10.0, -5.0, 3.0), direction)
    source = target.with_array(np.roll(labels, 2, axis=2))  # 2 voxels along x: 4 mm along the first direction column
    shift_mm = 2 * spacing[0] * direction[:, 0]
    none = target.with_array(np.zeros(labels.shape + (3,), np.float32))
    assert landmark_error_mm(target, source, none, [2, 3]) == pytest.approx(4.0, rel=1e-6)
    undo = target.with_array(np.broadcast_to(shift_mm.astype(np.float32), labels.shape + (3,)).copy())
    assert landmark_error_mm(target, source, undo, [2, 3]) == pytest.approx(0.0, abs=1e-3)
