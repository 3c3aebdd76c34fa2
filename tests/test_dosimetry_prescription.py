"""Prescription models against DESIGN.md's worked checks, the thesis equations and hand arithmetic."""

import numpy as np
import pytest

from sirtjax.dosimetry.activity import lung_shunt_fraction, tumour_to_normal_ratios
from sirtjax.dosimetry.compartments import measure_compartments
from sirtjax.dosimetry.masks import DoseInputError
from sirtjax.dosimetry.prescription import (body_surface_area_m2, bsa_method, lung_dose_gy, mono_compartment, partition,
                                            resin_lsf_reduction)
from sirtjax.volume import make_volume


def test_partition_worked_check_from_design():
    # DESIGN.md: LSF 0.1, D_N 40 Gy, T/N 3, M_T 0.2 kg, M_N 1.3 kg, 49.67 -> 1.700 GBq, 120 Gy, 8.44 Gy (1 kg lung)
    p = partition(40.0, 1.3, [0.2], [3.0], lung_shunt_fraction=0.1, constants="resin")
    assert round(p.activity_gbq, 3) == 1.700
    normal, tumour = p.compartments
    assert normal.dose_gy == pytest.approx(40.0) and tumour.dose_gy == pytest.approx(120.0)
    assert round(p.lung_dose_gy, 2) == 8.44
    assert p.warnings == ()
    assert p.to_dict()["constants"]["gy_kg_per_gbq"] == 49.67


def test_partition_many_tumours_follows_thesis_equations():
    m_n, m_t, tn = 1.1, [0.05, 0.2, 0.01], [2.0, 4.0, 0.5]
    p = partition(50.0, m_n, m_t, tn, lung_shunt_fraction=0.05, constants="thesis")
    denom = sum(r * m for r, m in zip(tn, m_t)) + m_n  # eq. 1.8-1.9 with one density
    fu = [c.fractional_uptake for c in p.compartments]
    assert fu[0] == pytest.approx(m_n / denom) and sum(fu) == pytest.approx(1.0)
    for comp, r, m in zip(p.compartments[1:], tn, m_t):
        assert comp.fractional_uptake == pytest.approx(r * m / denom)
        # eq. 1.5: D_i = F (1 - LSF) A FU_i / M_i, with the thesis' 49.38
        assert comp.dose_gy == pytest.approx(49.38 * 0.95 * p.activity_gbq * comp.fractional_uptake / m, rel=2e-4)
        assert comp.dose_gy == pytest.approx(r * 50.0)


def test_mono_compartment_and_lung_dose():
    p = mono_compartment(120.0, 1.5, lung_shunt_fraction=0.08, constants="glass")
    assert p.activity_gbq == pytest.approx(120.0 * 1.5 / (50.0 * 0.92))  # eq. 1.4 with LSF
    assert p.lung_dose_gy == pytest.approx(50.0 * 0.08 * p.activity_gbq / 1.0)
    assert lung_dose_gy(6.1, 0.1, 1.0, "icrp107") == pytest.approx(30.15, abs=0.01)  # thesis: 610 MBq shunted ~ 30 Gy in 1 kg


def test_bsa_worked_check_and_resin_reduction():
    assert round(body_surface_area_m2(1.75, 75.0), 4) == 1.9031  # DESIGN.md
    with pytest.raises(ValueError, match="height 175 m is no patient's height"):
        body_surface_area_m2(175.0, 75.0)  # centimetres given as metres
    p = bsa_method(1.75, 75.0, 200.0, 1300.0, lung_shunt_fraction=0.05)
    assert p.activity_gbq == pytest.approx(1.9031118 - 0.2 + 200.0 / 1500.0, rel=1e-6)
    assert [resin_lsf_reduction(f) for f in (0.05, 0.1, 0.12, 0.15, 0.18, 0.2, 0.3)] == [1, 1, 0.8, 0.8, 0.6, 0.6, 0.6]
    reduced = bsa_method(1.75, 75.0, 200.0, 1300.0, lung_shunt_fraction=0.25)
    assert reduced.activity_gbq == pytest.approx(0.6 * p.activity_gbq)
    codes = {w.code for w in reduced.warnings}
    assert codes == {"lung_shunt_above_limit", "bsa_activity_reduced"}
    # The reduction concerns the BSA column only (the report shows every method's warnings in one box).
    message = next(w.message for w in reduced.warnings if w.code == "bsa_activity_reduced")
    assert message.startswith("BSA method only:") and "60 %" in message and "25.0 %" in message


def test_warnings_are_structured():
    p = mono_compartment(120.0, 2.0, lung_shunt_fraction=0.19, lung_mass_kg=0.8)
    w = {x.code: x for x in p.warnings}
    assert set(w) == {"lung_dose_above_limit"} and w["lung_dose_above_limit"].limit == 30.0
    assert w["lung_dose_above_limit"].value == pytest.approx(p.lung_dose_gy)


@pytest.mark.parametrize("call", [
    lambda: partition(40, 1.3, [0.2], [3, 2]),
    lambda: partition(-40, 1.3, [0.2], [3]),
    lambda: partition(40, 1.3, [0.2], [3], lung_shunt_fraction=1.0),
    lambda: mono_compartment(100, 0.0),
    lambda: bsa_method(1.75, -3, 10, 100),
    lambda: lung_shunt_fraction(0, 0),
])
def test_bad_parameters_raise(call):
    with pytest.raises(ValueError):
        call()


def test_lsf_and_tn_from_counts():
    assert lung_shunt_fraction(100.0, 900.0) == pytest.approx(0.1)
    np.testing.assert_allclose(tumour_to_normal_ratios([300.0], [10.0], 1000.0, 100.0), [3.0])


def test_measure_compartments_on_a_spect_with_masks_on_another_grid():
    spect = np.zeros((20, 20, 20), np.float32)
    liver = np.zeros(spect.shape, np.uint8)
    liver[4:16, 4:16, 4:16] = 1
    lesions = np.zeros(spect.shape, np.uint8)
    lesions[6:9, 6:9, 6:9] = 3  # instance id 3
    lungs = np.zeros(spect.shape, np.uint8)
    lungs[17:19, 4:16, 4:16] = 1
    spect[liver > 0] = 1.0
    spect[lesions > 0] = 4.0  # T/N 4
    spect[lungs > 0] = 0.5
    vol = make_volume(spect, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    # masks on a 2 mm grid covering the same space (each SPECT voxel centre falls on a mask voxel)
    fine = lambda a: make_volume(np.repeat(np.repeat(np.repeat(a, 2, 0), 2, 1), 2, 2), (2.0, 2.0, 2.0), (-1.0, -1.0, -1.0))
    m = measure_compartments(vol, fine(liver), lesions=fine(lesions), lungs=fine(lungs))
    assert m.tumour_names == ("lesion_3",)
    np.testing.assert_allclose(m.tn_ratios, [4.0], rtol=1e-6)
    assert m.normal_volume_ml == pytest.approx((12**3 - 27) * 0.064)
    assert m.lung_shunt_fraction == pytest.approx(0.5 * 288 / (0.5 * 288 + 12**3 - 27 + 4 * 27))
    assert m.masks["liver"]["resampled_nearest"] is True
    with pytest.raises(DoseInputError, match="empty") as exc:
        measure_compartments(vol, make_volume(np.zeros_like(liver), (4.0, 4.0, 4.0)))
    assert exc.value.input_name == "liver"


def test_one_lung_shunt_precedence_for_every_caller():
    """Given (planar or counts) before the SPECT's masks before 0; the cut-lung and assumed-zero warnings."""
    from sirtjax.dosimetry.activity import choose_lung_shunt

    assert choose_lung_shunt(0.08, "planar scintigraphy", 0.03).fraction == 0.08
    spect = choose_lung_shunt(None, "planar scintigraphy", 0.03, lungs_cut=True)
    assert (spect.fraction, spect.source) == (0.03, "SPECT counts in the lung and liver masks")
    assert [w.code for w in spect.warnings] == ["lung_mask_cut"]
    none = choose_lung_shunt(None, "planar scintigraphy", None)
    assert (none.fraction, none.source, [w.code for w in none.warnings]) == (0.0, "assumed 0", ["lung_shunt_assumed_zero"])
