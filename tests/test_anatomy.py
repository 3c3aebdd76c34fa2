"""Real anatomy for the synthetic generator (sirtjax.train.anatomy) and the vendored real scans (datasets/real)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from sirtjax.io import write_volume
from sirtjax.phantom.raster import Tissue
from sirtjax.preprocess import PAD_VALUE
from sirtjax.segmentation.validation import MANIFEST, read_manifest, real_scans
from sirtjax.train.anatomy import (COLON, LABELS_ONLY_BODY_MM, LIVER_DARK, SCHEMES, UNLABELLED, LabelMapSource, label_map_source,
                                   real_patient, tissue_codes)
from sirtjax.train.label_maps import FLUID, N_CODES, OUTSIDE, stack_label_maps
from sirtjax.train.synth import SynthConfig, synth_batch
from sirtjax.train.synth_lesions import BODY_CODES, CALC, CORE, PHANTOM_CORES, PHANTOM_LESIONS, RIM
from sirtjax.volume import make_volume

ROOT = Path(__file__).resolve().parents[1]
OBLIQUE = np.array([[0.8, -0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]])


def test_every_scheme_maps_to_codes_the_generator_keeps_apart():
    """Real structures use codes the phantom's lesions, the generator's fluid and the outside never use."""
    reserved = {FLUID, OUTSIDE, *PHANTOM_LESIONS, *PHANTOM_CORES, *BODY_CODES, RIM, CORE, CALC}
    for name, table in SCHEMES.items():
        codes = set(table.values())
        assert max(codes) < N_CODES and not codes & reserved, name
        assert Tissue.LIVER in codes and sum(c == Tissue.LIVER for c in table.values()) == 1, name


def _ct_case():
    """A CT (z, y, x) with air, fat, soft tissue, bone, a bowel gas bubble, a liver with a bright vessel, and its
    TotalSegmentator-style labels (liver 5, colon 20)."""
    hu = np.full((12, 40, 40), -1000.0, np.float32)
    hu[:, 5:35, 5:35] = -100.0  # fat
    hu[:, 10:30, 10:30] = 40.0  # soft tissue
    hu[:, 30:33, 18:22] = 700.0  # bone
    hu[:, 12:14, 24:26] = -900.0  # gas in a bowel loop the labels miss
    labels = np.zeros(hu.shape, np.uint8)
    labels[2:10, 12:22, 12:22] = 5
    hu[2:10, 12:22, 12:22] = 60.0 + np.random.default_rng(0).normal(0, 3, (8, 10, 10))
    hu[2:10, 16, 16] = 200.0  # a contrast-filled vessel
    labels[4:8, 24:28, 12:16] = 20
    hu[4:8, 24:28, 12:16] = 30.0
    hu[5, 25, 13] = -800.0  # gas in the colon
    return hu, labels


def test_a_ct_label_map_gets_its_unlabelled_tissues_from_hounsfield_units():
    hu, labels = _ct_case()
    codes = tissue_codes(labels, "totalsegmentator", hu, "ct")
    assert codes[0, 0, 0] == Tissue.AIR and codes[0, 6, 6] == Tissue.FAT and codes[0, 15, 28] == Tissue.MUSCLE
    assert codes[0, 31, 20] == Tissue.CORTEX and codes[0, 12, 24] == Tissue.GAS
    assert codes[5, 13, 13] == Tissue.LIVER and codes[5, 16, 16] == Tissue.HEPATIC
    assert codes[5, 24, 14] == COLON and codes[5, 25, 13] == Tissue.GAS  # colon, and the gas inside it
    assert tissue_codes(labels, "totalsegmentator", -hu, "ct")[5, 16, 16] == LIVER_DARK


def test_a_label_map_without_its_image_has_an_approximate_body():
    labels = np.zeros((10, 80, 140), np.uint8)
    labels[3:7, 30:50, 30:50] = 6  # an AMOS liver
    codes = tissue_codes(labels, "amos", spacing_zyx_mm=(5.0, 1.0, 1.0))
    edge = 49 + int(LABELS_ONLY_BODY_MM)  # 1 mm voxels in x
    assert codes[5, 40, 40] == Tissue.LIVER and codes[5, 40, edge - 2] == UNLABELLED and codes[5, 40, edge + 2] == Tissue.AIR


def test_real_patient_keeps_the_liver_where_and_as_large_as_it_is(tmp_path):
    """On an anisotropic, oblique grid: the canonical map holds the liver's volume (within a voxel layer) at its
    physical place, and the liver distance grows 1 mm per mm outside it."""
    hu, labels = _ct_case()
    spacing, origin = (1.5, 1.2, 4.0), (-30.0, 10.0, -20.0)
    image = write_volume(make_volume(hu, spacing, origin, OBLIQUE), tmp_path / "ct.nii.gz")
    label_path = write_volume(make_volume(labels, spacing, origin, OBLIQUE), tmp_path / "labels.nii.gz", dtype=np.uint8)
    tissue, liver_mm = real_patient(LabelMapSource("case", label_path, "totalsegmentator", image, "ct"), 2.0)
    liver_ml = np.prod(spacing) * np.count_nonzero(labels == 5) / 1000
    assert np.count_nonzero(liver_mm == 0) * 8 / 1000 == pytest.approx(liver_ml, rel=0.25)
    assert set(np.unique(tissue[liver_mm == 0])) <= {Tissue.LIVER, Tissue.HEPATIC, LIVER_DARK}
    assert liver_mm.max() > 20 and np.all(np.abs(np.diff(liver_mm.astype(int), axis=2)) <= 3)
    from sirtjax.segmentation.preprocess import canonical_grid
    from sirtjax.volume import index_to_world

    vol = make_volume(labels, spacing, origin, OBLIQUE)
    centre_in = (index_to_world(vol) @ np.r_[np.argwhere(labels == 5).mean(0)[::-1], 1.0])[:3]
    grid = canonical_grid(vol, (2.0, 2.0, 2.0))
    centre_out = (index_to_world(grid) @ np.r_[np.argwhere(liver_mm == 0).mean(0)[::-1], 1.0])[:3]
    np.testing.assert_allclose(centre_out, centre_in, atol=2.0)


def test_beyond_a_real_map_the_generator_renders_padding_and_no_liver():
    """A real scan's map has OUTSIDE beyond it: patches reaching past it read the inference padding there, with
    no label, while a phantom's map has air beyond it."""
    tissue = np.full((40, 40, 40), Tissue.MUSCLE, np.uint8)
    tissue[15:25, 10:30, 10:30] = Tissue.LIVER
    liver_mm = np.where(tissue == Tissue.LIVER, 0, 10).astype(np.uint8)
    maps = stack_label_maps([(tissue, liver_mm)], n_foreground=64, outside=[OUTSIDE])
    cfg = SynthConfig(max_rotation_deg=0.0, elastic_mm=0.0, scale_range=(1.0, 1.0), fov_cut_prob=0.0, ascites_prob=0.0,
                      resection_prob=0.0, slice_mm=(1.0, 1.0), blur_max_vox=0.0, noise_max=0.0)
    x, y = synth_batch(jax.random.key(0), maps, batch_size=2, in_patch=(45, 45, 45), out_patch=(45, 45, 45), spacing_mm=3.0,
                       source_mm=2.0, cfg=cfg, foreground_prob=1.0)
    x, y = np.asarray(x)[..., 0], np.asarray(y)[..., 0]
    assert np.all(x[:, 0] == PAD_VALUE) and np.all(x[:, -1] == PAD_VALUE)  # 66 mm from a centre 30-50 mm into an 80 mm map
    assert np.all(y[:, 0] == 0) and np.all(y[:, -1] == 0) and y.max() == 1.0
    assert np.any(x[:, 22] != PAD_VALUE)


def test_label_maps_are_drawn_by_their_weights():
    one = (np.full((8, 8, 8), Tissue.LIVER, np.uint8), np.zeros((8, 8, 8), np.uint8))
    maps = stack_label_maps([one, one, one], n_foreground=4, weights=[0.0, 3.0, 1.0])
    draws = np.asarray(jax.vmap(lambda k: jax.random.categorical(k, maps.log_weights))(jax.random.split(jax.random.key(1), 4000)))
    assert not np.any(draws == 0) and np.mean(draws == 1) == pytest.approx(0.75, abs=0.03)
    with pytest.raises(ValueError, match="weights"):
        stack_label_maps([one], weights=[-1.0])


def test_the_vendored_real_scans_are_whole_and_licensed():
    """Every file the manifest names exists and matches SHA256SUMS; SOURCES.md names each; the held-out scan's
    patient gives no label map to the training configs."""
    folder = MANIFEST.parent
    sums = dict(line.split()[::-1] for line in (folder / "SHA256SUMS").read_text().splitlines())
    for name, path in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == path, name
    manifest = read_manifest()
    named = [e[k] for kind in manifest.values() for e in kind.values() for k in ("image", "labels") if k in e]
    sources = (folder / "SOURCES.md").read_text()
    for path in map(Path, named):
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        assert files and all(f"./{f.relative_to(folder)}" in sums for f in files), path
        assert path.name in sources
    held_out = {s.patient for s in real_scans().values() if s.held_out}
    assert held_out
    for config in (ROOT / "configs" / "segmentation").glob("*.json"):
        maps = json.loads(config.read_text()).get("synth", {}).get("anatomy", {}).get("maps", [])
        assert not {manifest["label_maps"][m]["patient"] for m in maps} & held_out, config.name
    assert label_map_source(manifest, "amos_0013").scheme == "amos"
