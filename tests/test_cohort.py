"""`sirtjax cohort`: manifests, batches by grid, resume after a kill, failures recorded, sharding over devices."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sirtjax.cli import main
from sirtjax.cohort import RegisterSettings, plan_batches, read_manifest
from sirtjax.errors import InputError
from sirtjax.io import read_volume, write_volume
from sirtjax.registration import PRESETS, Overrides
from sirtjax.registration.config import EarlyStop
from sirtjax.volume import make_volume, world_grid

# cnn-guided cut short for a test: one level, no image stage, a few fixed-length steps (no early stop)
QUICK = dataclasses.replace(Overrides(levels=1, iterations=4, image_stages=False).apply(PRESETS["cnn-guided"]),
                            early_stop=EarlyStop(min_iterations=10))


def _scene(vol, shift):
    p = np.asarray(world_grid(vol)) - shift
    body = np.linalg.norm(p / np.array([30.0, 24.0, 26.0]), axis=-1) < 1
    liver = np.linalg.norm((p - np.array([8.0, 0.0, 3.0])) / np.array([14.0, 11.0, 12.0]), axis=-1) < 1
    return (50.0 * body + 60.0 * liver).astype(np.float32), liver.astype(np.uint8)


def write_cases(folder: Path, n: int) -> Path:
    """n registration cases on grids of two sizes and anisotropic, oblique spacing; their manifest CSV."""
    rows = []
    for i in range(n):
        shape = (16, 18, 20) if i % 2 == 0 else (20, 18, 18)  # z buckets 16 and 32
        fixed = make_volume(np.zeros(shape, np.float32), (3.5, 3.0, 3.5), (-34.0, -27.0, -28.0))
        c, s = np.cos(0.1 * i), np.sin(0.1 * i)
        moving = make_volume(np.zeros((16, 18, 18), np.float32), (3.6, 3.2, 3.8), (-30.0, -30.0, -32.0),
                             np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]))
        fi, fl = _scene(fixed, np.zeros(3))
        mi, ml = _scene(moving, np.array([3.0 + i, -2.0, 4.0]))
        names = {}
        for name, vol in (("fixed", fixed.with_array(fi)), ("moving", moving.with_array(mi)),
                          ("fixed_mask", fixed.with_array(fl)), ("moving_mask", moving.with_array(ml))):
            names[name] = write_volume(vol, folder / f"c{i}_{name}.nii.gz").name
        rows.append({"id": f"case{i}", **names})
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["id", "fixed", "moving", "fixed_mask", "moving_mask"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    manifest = write_cases(d, 3)
    (d / "quick.json").write_text(json.dumps(dataclasses.asdict(QUICK)))
    return d, manifest


def _summary(out: Path) -> list[dict]:
    with open(out / "summary.csv") as fh:
        return list(csv.DictReader(fh))


def test_manifest_errors_name_the_file_and_the_case(tmp_path, cohort):
    d, manifest = cohort
    good = manifest.read_text().splitlines()
    cases = [
        ("id,fixed,moving,weight\n" + "a,x,y,1\n", "unknown column 'weight'"),
        (good[0] + "\n" + good[1] + "\n" + good[1] + "\n", "the id 'case0' is used twice"),
        (good[0] + "\n" + good[1].replace("case0", "../up") + "\n", "the id '../up' must be"),
        (good[0] + "\n" + good[1].replace("c0_moving", "nowhere") + "\n", "the moving 'nowhere.nii.gz' does not exist"),
        ("id,fixed,moving,fixed_mask\n" + ",".join(good[1].split(",")[:4]) + "\n", "give both 'fixed_mask' and 'moving_mask'"),
        ("id,a,b\nx,1,2\n", "cannot tell the task"),
        (good[0] + "\n", "no cases"),
    ]
    for i, (text, message) in enumerate(cases):
        path = d / f"bad{i}.csv"
        path.write_text(text)
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
            read_manifest(path)
    (d / "bom.csv").write_bytes("\ufeff".encode() + manifest.read_bytes())  # as spreadsheets save CSV
    assert [c.id for c in read_manifest(d / "bom.csv").cases] == ["case0", "case1", "case2"]
    (d / "nan.json").write_text(json.dumps({"task": "dose", "cases": [
        {"id": "a", "activity": "c0_fixed.nii.gz", "liver": "c0_fixed_mask.nii.gz", "activity_gbq": "nan"}]}))
    with pytest.raises(InputError, match="'activity_gbq' must be a finite number"):
        read_manifest(d / "nan.json")
    (d / "reserved.csv").write_text(good[0] + "\n" + good[1].replace("case0", "summary.csv") + "\n")
    with pytest.raises(InputError, match="and not cohort.json or summary.csv"):
        read_manifest(d / "reserved.csv")
    (d / "unguided.csv").write_text("id,fixed,moving\n" + ",".join(good[1].split(",")[:3]) + "\n")
    with pytest.raises(InputError, match="case case0: the cnn-guided preset needs the columns fixed_mask and moving_mask"):
        plan_batches(read_manifest(d / "unguided.csv"), RegisterSettings(preset="cnn-guided"), 8)
    (d / "bad.json").write_text(json.dumps({"task": "cluster", "cases": [{"id": "a"}]}))
    with pytest.raises(InputError, match="unknown task 'cluster'"):
        read_manifest(d / "bad.json")


def test_batches_follow_the_grid_and_do_not_depend_on_what_is_done(cohort):
    _, manifest = cohort
    m = read_manifest(manifest)
    batches = plan_batches(m, RegisterSettings(), batch_size=8)
    assert [[c.id for c in b.cases] for b in batches] == [["case0", "case2"], ["case1"]]  # two bucketed grids
    assert [b.index for b in plan_batches(m, RegisterSettings(), batch_size=1)] == [0, 1, 2]


def test_cohort_registers_resumes_and_records_a_failure(cohort, capsys):
    d, manifest = cohort
    rows = manifest.read_text().splitlines()
    (d / "broken.nii.gz").write_bytes(b"not an image")
    rows.append("broken," + ",".join(["broken.nii.gz"] + rows[1].split(",")[2:]))
    with_bad = d / "with_bad.csv"
    with_bad.write_text("\n".join(rows) + "\n")
    out = d / "run"
    args = ["cohort", str(with_bad), "-o", str(out), "--config", str(d / "quick.json"), "--batch-size", "2"]
    main(args)
    said = capsys.readouterr()
    assert "3 done, 1 failed, 0 pending" in said.out and "failed: broken:" in said.err
    summary = {r["id"]: r for r in _summary(out)}
    assert [summary[f"case{i}"]["status"] for i in range(3)] == ["done"] * 3
    assert summary["broken"]["status"] == "failed" and "broken.nii.gz" in summary["broken"]["reason"]
    # every case's folder is what `sirtjax register` writes, plus case.json; the field is on the fixed grid
    assert {p.name for p in (out / "case1").iterdir()} == {"warped.nii.gz", "displacement.nii.gz", "affine.json",
                                                           "report.json", "case.json"}
    fixed = read_volume(d / "c1_fixed.nii.gz")
    field = read_volume(out / "case1" / "displacement.nii.gz", vector=True)
    assert field.array.shape == fixed.shape + (3,) and np.allclose(field.spacing_mm, fixed.spacing_mm)
    # a run killed after the first batch: the rest is done on resume, the finished case untouched
    first = (out / "case0" / "displacement.nii.gz").stat().st_mtime_ns
    for case in ("case1", "case2"):
        os.rename(out / case, d / f"kept_{case}")
    main(args)
    assert "2 done and 0 failed in this run" in capsys.readouterr().out
    assert (out / "case0" / "displacement.nii.gz").stat().st_mtime_ns == first
    for case in ("case1", "case2"):  # the same batch, the same random numbers: the same field
        np.testing.assert_allclose(read_volume(out / case / "displacement.nii.gz", vector=True).array,
                                   read_volume(d / f"kept_{case}" / "displacement.nii.gz", vector=True).array, atol=1e-4)
    # another manifest or settings on the same folder is refused, nothing merged
    with pytest.raises(SystemExit) as exc:
        main(["cohort", str(manifest), "-o", str(out), "--config", str(d / "quick.json"), "--batch-size", "2"])
    assert exc.value.code == 2 and "holds a cohort with another manifest or settings" in capsys.readouterr().err


SHARDED = """
import json, sys
from pathlib import Path
import jax, numpy as np
from sirtjax.cohort import RegisterSettings, read_manifest, run_cohort
from sirtjax.cohort.tasks import local_devices
from sirtjax.io import read_volume
from sirtjax.registration import make_pair
from sirtjax.registration.files import load_config
from sirtjax.registration.levels import prepare_levels
from sirtjax.registration.nonrigid import field_factor_for, field_shape, nonrigid_objective
devices = local_devices(None)
manifest, out, config = (Path(a) for a in sys.argv[1:4])
cases, settings = read_manifest(manifest), RegisterSettings(config=load_config(config))
run_cohort(cases, out, settings, devices=devices, batch_size=4)
# one step's loss and gradient of the batch, its level data placed as the cohort places them
cfg = settings.config
pairs = [make_pair(*(read_volume(c.paths[k]) for k in ("fixed", "moving")), fixed_mask=read_volume(c.paths["fixed_mask"]),
                   moving_mask=read_volume(c.paths["moving_mask"])) for c in cases.cases[::2]] * 4
level = prepare_levels(pairs, cfg, sharding=devices.sharding)[-1]
stage = cfg.main_stage
f = field_factor_for(stage.field_spacing_mm, float(np.max(np.asarray(level.fixed.spacing_mm)[0])))
objective = nonrigid_objective(cfg.similarity.options(stage.samples), cfg.regulariser_options(stage),
                               image=False, seg=True, field_factor=f)
v = np.random.default_rng(0).normal(0, 1, (8,) + field_shape(level.fixed.array.shape[1:4], f) + (3,)).astype(np.float32)
weights = jax.tree.map(lambda w: np.full(8, w, np.float32), stage.weights())
(loss, _), grad = jax.jit(jax.vmap(jax.value_and_grad(objective, has_aux=True)))(
    v, level, weights, jax.random.split(jax.random.key(0), 8))
np.save(out / "step.npy", np.concatenate([np.asarray(loss).ravel(), np.asarray(grad).ravel()]))
print(json.dumps({"devices": devices.count, "sharded": devices.sharding is not None}))
"""


@pytest.mark.slow  # about 90 s of cold compiles in two subprocesses: CI stays under 15 minutes
def test_a_cohort_sharded_over_8_devices_gives_the_one_device_numbers(tmp_path, cohort):
    """Fake CPU devices (XLA_FLAGS) prove that sharding gives the same numbers, not that it is faster.

    A step's loss and gradient agree to float rounding. A whole registration agrees less closely: per device
    the batch is smaller, so XLA rounds differently (the affines differ by ~1e-7), and Adam's first steps divide
    each gradient component by its own magnitude, so where a node's gradient is near zero such a rounding
    difference moves it by a fraction of a step. One device with another batch size differs as much."""
    manifest = write_cases(tmp_path, 4)
    (tmp_path / "quick.json").write_text(json.dumps(dataclasses.asdict(QUICK)))
    said = {}
    for n in (8, 1):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
        run = subprocess.run([sys.executable, "-c", SHARDED, str(manifest), str(tmp_path / f"out{n}"),
                              str(tmp_path / "quick.json")], env=env, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-2000:]
        said[n] = json.loads(run.stdout.strip().splitlines()[-1])
    assert said == {8: {"devices": 8, "sharded": True}, 1: {"devices": 1, "sharded": False}}
    steps = [np.load(tmp_path / f"out{n}" / "step.npy") for n in (8, 1)]
    np.testing.assert_allclose(steps[0], steps[1], rtol=1e-5, atol=1e-8)
    for i in range(4):
        affines = [json.loads((tmp_path / f"out{n}" / f"case{i}" / "affine.json").read_text()) for n in (8, 1)]
        np.testing.assert_allclose(affines[0]["homogeneous"], affines[1]["homogeneous"], atol=1e-4)
        a, b = (read_volume(tmp_path / f"out{n}" / f"case{i}" / "displacement.nii.gz", vector=True).array for n in (8, 1))
        assert np.abs(b).max() > 1.0  # a real registration, not an identity on both sides
        assert np.mean(np.abs(a - b)) < 0.05 and np.abs(a - b).max() < 1.0


def test_dose_cohort_writes_what_sirtjax_dose_writes_and_fails_a_case_alone(tmp_path, capsys):
    spacing = (4.0, 4.0, 5.0)
    grid = make_volume(np.zeros((20, 24, 24), np.float32), spacing, (-48.0, -48.0, -50.0),
                       np.array([[0.0, 1.0, 0], [1.0, 0.0, 0], [0, 0, 1.0]]))  # swapped axes: a left-handed grid
    p = np.asarray(world_grid(grid))
    liver = np.linalg.norm(p / np.array([30.0, 24.0, 26.0]), axis=-1) < 1
    counts = grid.with_array((1000.0 * liver + 10.0).astype(np.float32))
    write_volume(counts, tmp_path / "spect.nii.gz")
    write_volume(grid.with_array(liver.astype(np.uint8)), tmp_path / "liver.nii.gz")
    (tmp_path / "doses.csv").write_text("id,activity,liver,activity_gbq\n"
                                        "a,spect.nii.gz,liver.nii.gz,2.0\nb,spect.nii.gz,liver.nii.gz,\n")
    main(["cohort", str(tmp_path / "doses.csv"), "-o", str(tmp_path / "out")])
    assert "1 done, 1 failed" in capsys.readouterr().out
    main(["dose", str(tmp_path / "spect.nii.gz"), "--liver", str(tmp_path / "liver.nii.gz"), "--activity-gbq", "2",
          "-o", str(tmp_path / "single")])
    assert {p.name for p in (tmp_path / "out" / "a").iterdir()} == {"dose.nii.gz", "dvh.csv", "dvh.png", "report.json",
                                                                    "case.json"}
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "a" / "dose.nii.gz").array,
                                  read_volume(tmp_path / "single" / "dose.nii.gz").array)
    summary = {r["id"]: r for r in _summary(tmp_path / "out")}
    report = json.loads((tmp_path / "single" / "report.json").read_text())
    liver_mean = next(v["mean_gy"] for v in report["vois"] if v["name"] == "liver")
    assert float(summary["a"]["liver_mean_gy"]) == pytest.approx(liver_mean, rel=1e-5)
    assert summary["b"]["status"] == "failed" and "activity" in summary["b"]["reason"]


def test_a_batch_s_folders_are_written_while_the_next_batch_runs(tmp_path, monkeypatch):
    """A batch's folders are published in a writer thread while the next batch computes (a fake dose task whose first
    case's writing waits for the second batch to start), and each case is recorded whole once written."""
    import threading

    from sirtjax.cohort import run as cohort_run
    from sirtjax.cohort.serial import DoseSettings, no_key
    from sirtjax.cohort.tasks import local_devices

    second_batch = threading.Event()
    seen = []

    def runner(cases, settings, key, out, devices, todo, publisher):
        if cases[0].id == "b":
            second_batch.set()

        def write(folder, case_id=cases[0].id):
            seen.append((case_id, second_batch.wait(timeout=30)))
            (folder / "result.txt").write_text(case_id)

        return [publisher(out, cases[0], 0.0, {}, write)]

    monkeypatch.setitem(cohort_run.TASKS, "dose", (DoseSettings, no_key, runner))
    (tmp_path / "x.nii.gz").write_bytes(b"")
    (tmp_path / "doses.csv").write_text("id,activity,liver,activity_gbq\na,x.nii.gz,x.nii.gz,1\nb,x.nii.gz,x.nii.gz,1\n")
    summary = cohort_run.run_cohort(read_manifest(tmp_path / "doses.csv"), tmp_path / "out", DoseSettings(),
                                    devices=local_devices(None), batch_size=1)
    assert seen == [("a", True), ("b", True)]  # a's folder was still being written when b's batch began
    assert summary.count("done") == 2 and (tmp_path / "out" / "a" / "result.txt").read_text() == "a"
    assert {p.name for p in (tmp_path / "out" / "a").iterdir()} == {"result.txt", "case.json"}


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    from sirtjax.phantom import PhantomConfig, generate_study, write_study

    return write_study(generate_study(5, PhantomConfig.small()), tmp_path_factory.mktemp("s") / "study")


@pytest.mark.slow  # 20 s of CI; the cohort segment task calls segmentation.segment_liver, as sirtjax segment does (cohort/serial.py)
def test_segment_cohort_writes_the_mask_sirtjax_segment_writes(small_study, tmp_path, capsys):
    image = small_study / "maa_ct.nii.gz"
    (tmp_path / "images.csv").write_text(f"id,image\nct,{image}\nbroken,{tmp_path / 'images.csv'}\n")
    main(["cohort", str(tmp_path / "images.csv"), "-o", str(tmp_path / "out")])
    assert "1 done, 1 failed" in capsys.readouterr().out
    main(["segment", str(image), "-o", str(tmp_path / "single.nii.gz")])
    ours = read_volume(tmp_path / "out" / "ct" / "liver.nii.gz").array
    np.testing.assert_array_equal(ours, read_volume(tmp_path / "single.nii.gz").array)
    summary = {r["id"]: r for r in _summary(tmp_path / "out")}
    assert summary["ct"]["modality"] == "ct" and float(summary["ct"]["liver_ml"]) > 100
    assert summary["broken"]["status"] == "failed" and "images.csv" in summary["broken"]["reason"]


def test_segment_cohort_as_ct_fails_a_ct_not_in_hounsfield_units(tmp_path, capsys):
    """--modality ct reads each image as a CT: one of stored values (rescale intercept lost) fails its case, saying so."""
    _, y, x = np.meshgrid(np.arange(12), np.linspace(-1, 1, 40), np.linspace(-1, 1, 40), indexing="ij")
    hu = np.where(np.hypot(x / 0.9, y / 0.7) > 1.0, -1000.0, 50.0).astype(np.float32)
    write_volume(make_volume(np.clip(hu + 1024.0, 0.0, None), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0), np.eye(3)), tmp_path / "stored.nii.gz")
    (tmp_path / "images.csv").write_text(f"id,image\nstored,{tmp_path / 'stored.nii.gz'}\n")
    main(["cohort", str(tmp_path / "images.csv"), "-o", str(tmp_path / "out"), "--modality", "ct"])
    assert "0 done, 1 failed" in capsys.readouterr().out
    summary = {r["id"]: r for r in _summary(tmp_path / "out")}
    assert summary["stored"]["status"] == "failed" and "not in Hounsfield units" in summary["stored"]["reason"]


def test_plan_cohort_writes_each_plan_whole(small_study, tmp_path, capsys):
    (tmp_path / "empty").mkdir()  # a folder without study.json: that case fails alone
    (tmp_path / "studies.csv").write_text(f"id,study,lung_shunt_fraction\np5,{small_study},0.08\nnone,empty,\n")
    main(["cohort", str(tmp_path / "studies.csv"), "-o", str(tmp_path / "out")])
    assert "1 done, 1 failed" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "p5" / "plan" / "report.json").read_text())
    summary = {r["id"]: r for r in _summary(tmp_path / "out")}
    assert float(summary["p5"]["lung_shunt_fraction"]) == pytest.approx(0.08)
    assert (tmp_path / "out" / "p5" / "plan" / "report.html").exists()
    assert float(summary["p5"]["planned_activity_gbq"]) > 0 and report["vois"]
    assert "study.json" in summary["none"]["reason"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".plan")]  # nothing left half-way


@pytest.mark.slow  # about 60 s of cold compiles in three subprocesses: CI stays under 15 minutes
def test_two_processes_share_a_cohort_under_jax_distributed(cohort, tmp_path):
    """Two processes on this machine (one CPU device each, gloo for the barriers) split the batches between them and
    leave the fields a single process computes, and one complete summary."""
    import socket

    d, manifest = cohort
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    args = ["-m", "sirtjax", "cohort", str(manifest), "--config", str(d / "quick.json"), "--batch-size", "1"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    ranks = [subprocess.Popen([sys.executable, *args, "-o", str(tmp_path / "two"), "--distributed", "--coordinator",
                               f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    said = [p.communicate(timeout=900) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], said[0][1][-2000:] + said[1][1][-2000:]
    assert "(2 done and 0 failed in this run)" in said[0][0] and "(1 done and 0 failed in this run)" in said[1][0]
    one = subprocess.run([sys.executable, *args, "-o", str(tmp_path / "one")], env=env, capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    assert [r["status"] for r in _summary(tmp_path / "two")] == ["done"] * 3
    for i in range(3):
        a, b = (read_volume(tmp_path / run / f"case{i}" / "displacement.nii.gz", vector=True).array
                for run in ("two", "one"))
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_cohort_request_checks_its_options_before_anything_is_written(cohort, tmp_path):
    """sirtjax cohort's options refused as sirtjax register refuses them (one rule for both), naming the option or file."""
    from sirtjax.cohort.request import CohortRequest, run_cohort_request

    _, manifest = cohort
    guided = Path(__file__).resolve().parents[1] / "configs" / "registration" / "cnn-guided.json"
    for options, says in (({"iterations": 0}, "--iterations: must be at least 1"),
                          ({"batch_size": 0}, "--batch-size: must be at least 1"),
                          ({"preset": "image-based", "config": guided}, f"{guided}: an affine on segmentations needs masks"),
                          ({"process_id": 1}, "--coordinator: --coordinator, --num-processes and --process-id need --distributed")):
        with pytest.raises(InputError) as exc:
            run_cohort_request(CohortRequest(manifest, tmp_path / "out", **options))
        assert str(exc.value).startswith(says) and not (tmp_path / "out").exists()


def test_cohort_request_says_what_was_finished_before_and_counts_this_run(tmp_path):
    """on_start hears the cases finished before (failed ones too, unless retried); the run counts what ended in it."""
    from sirtjax.cohort.request import CohortRequest, run_cohort_request

    manifest = write_cases(tmp_path, 1)
    (tmp_path / "quick.json").write_text(json.dumps(dataclasses.asdict(QUICK)))
    (tmp_path / "broken.nii.gz").write_bytes(b"not an image")
    with open(manifest, "a") as fh:  # a second case, its fixed image unreadable
        fh.write("broken,broken.nii.gz," + ",".join(manifest.read_text().splitlines()[1].split(",")[2:]) + "\n")
    heard = []
    request = CohortRequest(manifest, tmp_path / "out", config=tmp_path / "quick.json")
    runs = [run_cohort_request(dataclasses.replace(request, retry_failed=retry), on_start=lambda *a: heard.append(a),
                               on_outcome=lambda o: heard.append(o.status)) for retry in (False, False, True)]
    assert heard == [("register", 2, 0), "done", "failed", ("register", 2, 2), ("register", 2, 1), "failed"]
    assert [(r.done_now, r.failed_now, r.pending) for r in runs] == [(1, 1, 0), (0, 0, 0), (0, 1, 0)]


def test_cohort_process_keeps_its_imports_lean(cohort, tmp_path):
    """A `sirtjax cohort` process of registrations imports neither flax, orbax nor matplotlib, nor the workflow
    pipelines (as `sirtjax register`'s): checked from the interpreter's own import log (-X importtime) of a whole run."""
    import os
    import subprocess
    import sys

    d, manifest = cohort
    env = dict(os.environ, SIRTJAX_CACHE_DIR=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "sirtjax", "cohort", str(manifest), "-o",
                          str(tmp_path / "out"), "--config", str(d / "quick.json")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert "sirtjax.registration" in imported and (tmp_path / "out" / "summary.csv").exists()
    heavy = sorted(m for m in imported if m.split(".")[0] in ("flax", "orbax", "matplotlib") or m.startswith("sirtjax.pipelines"))
    assert not heavy, heavy
