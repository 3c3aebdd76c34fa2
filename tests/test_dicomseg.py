"""DICOM SEG export: the masks read back by highdicom on every grid, its coding, and dciodvfy when installed."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
from test_rtstruct import GRIDS, _ct_and_sphere

from sirtjax.io.rtstruct import write_rtstruct


def _vois(sphere):
    m = np.asarray(sphere.array) > 0
    lesion = m & (np.indices(m.shape)[2] > m.shape[2] // 2 + 2)
    return {"liver": sphere, "lesion_1": sphere.with_array(lesion.astype(np.uint8)),
            "lungs": sphere.with_array(np.zeros(m.shape, np.uint8))}


@pytest.mark.parametrize("grid", list(GRIDS))
def test_seg_reads_back_as_the_masks_on_the_ct_slices(tmp_path, grid):
    ct, sphere = _ct_and_sphere(*GRIDS[grid])
    vois = _vois(sphere)
    write_rtstruct(ct, vois, tmp_path / "out", roi_types={"lesion_1": "GTV"}, given={"liver"})
    seg = hd.seg.segread(tmp_path / "out" / "seg.dcm")
    ct_files = sorted((tmp_path / "out" / "ct").iterdir(), key=lambda f: int(pydicom.dcmread(f).InstanceNumber))
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in ct_files]  # slice k of the CT grid
    assert seg.FrameOfReferenceUID == pydicom.dcmread(ct_files[0]).FrameOfReferenceUID
    assert list(seg.get_segment_numbers()) == [1, 2]  # the empty lungs VOI has no segment
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2])  # checks positions
    for i, name in enumerate(("liver", "lesion_1")):
        np.testing.assert_array_equal(back[..., i] > 0, np.asarray(vois[name].array) > 0)
    liver, lesion = seg.get_segment_description(1), seg.get_segment_description(2)
    assert (liver.segment_label, liver.segmented_property_type.meaning, liver.algorithm_type.value) == ("liver", "Liver", "MANUAL")
    assert (lesion.segmented_property_type.meaning, lesion.algorithm_type.value) == ("Neoplasm", "AUTOMATIC")
    assert lesion.algorithm_identification[0].AlgorithmName == "sirtjax"


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_seg_passes_dciodvfy(tmp_path):
    ct, sphere = _ct_and_sphere(*GRIDS["oblique-left-handed"], shape=(6, 16, 16), radius_mm=5)
    write_rtstruct(ct, _vois(sphere), tmp_path / "out", roi_types={"lesion_1": "GTV"})
    res = subprocess.run(["dciodvfy", str(tmp_path / "out" / "seg.dcm")], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
    assert not errors, "\n".join(errors)
