"""segment_image, the library call behind `sirtjax segment`: typed results, with the model and inference replaced."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sirtjax.errors import InputError
from sirtjax.io import read_volume, write_volume
from sirtjax.segmentation.request import SegmentRequest, segment_image
from sirtjax.volume import make_volume


@pytest.fixture()
def ct(tmp_path):
    _, y, x = np.meshgrid(np.arange(8), np.linspace(-1, 1, 24), np.linspace(-1, 1, 24), indexing="ij")
    return write_volume(make_volume(np.where(np.hypot(x, y) < 0.8, 40.0, -1000.0).astype(np.float32), (2.0, 2.0, 3.0)),
                        tmp_path / "ct.nii.gz")


def _no_model(name, target, modality, option, *, registration=False):
    return None, {"name": name, "target": target}


def test_segment_image_gives_the_liver_volume_and_warnings_typed_and_writes_the_mask(ct, tmp_path):
    """The liver's volume in ml (voxels x voxel volume), the inference's warnings, a guessed modality heard first."""
    mask = np.zeros((8, 24, 24), np.uint8)
    mask[2:6, 5:15, 5:15] = 1
    heard = []

    def find_liver(net, spec, vol, modality, predict):
        heard.append((spec["target"], modality, sorted(predict)))
        return vol.with_array(mask), vol.with_array(mask * 0.9), ["implausible"]

    result = segment_image(SegmentRequest(ct, tmp_path / "liver.nii.gz", probability=tmp_path / "p.nii.gz"),
                           load_model=_no_model, find_liver=find_liver, on_guess=lambda *a: heard.append(a))
    assert heard == [("ct", None), ("liver", "ct", ["on_batch", "on_noise", "programs", "tta"])]
    assert result.liver_ml == pytest.approx(400 * 2.0 * 2.0 * 3.0 / 1000.0)  # 400 voxels of 12 mm^3
    assert (result.lesions, result.carried_by, result.notes, result.warnings) == (None, None, (), ("implausible",))
    np.testing.assert_array_equal(read_volume(tmp_path / "liver.nii.gz").array, mask)
    np.testing.assert_allclose(read_volume(tmp_path / "p.nii.gz").array, mask * 0.9)


@pytest.mark.parametrize("options, says", [
    ({"target": "liver", "min_cnr": 2.0}, "--min-cnr: is for --target lesions"),
    ({"target": "lesions", "threshold": 0.0}, "--threshold: must be a probability between 0 and 1 (exclusive), got 0.0"),
    ({"reference_mask": Path("m.nii.gz")}, "--reference: --reference and --reference-mask go together"),
    ({"field": Path("f.nii.gz")}, "--field: is for --reference"),
    ({"reference": Path("r.nii.gz"), "reference_mask": Path("m.nii.gz"), "tta": True}, "--reference: segments the liver alone"),
])
def test_segment_image_refuses_options_that_do_not_go_together_before_reading(options, says, tmp_path):
    with pytest.raises(InputError) as exc:
        segment_image(SegmentRequest(tmp_path / "missing.nii.gz", tmp_path / "out.nii.gz", **options), load_model=_no_model)
    assert str(exc.value).startswith(says)


def test_segment_and_regseg_modules_import_without_flax():
    """What `segment --reference`'s main thread imports (the CLI command, the request, the regseg pipeline and the
    pre-alignment) leaves Flax to the thread that builds the network: its import overlaps the reading and the
    pre-alignment (issue 71's start-up budget)."""
    import subprocess
    import sys

    code = ("import sys, sirtjax.cli.segment, sirtjax.segmentation, sirtjax.segmentation.request, sirtjax.segmentation.regseg; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flax', 'orbax', 'matplotlib'}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]", run.stdout
