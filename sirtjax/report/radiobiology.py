"""Radiobiology in the report: BED, EQD2, EUD, NTCP and TCP per VOI, the tissue models with their sources, BED DVHs."""

from __future__ import annotations

from sirtjax.dosimetry.bed_map import BedResult
from sirtjax.report.figures import dvh_png
from sirtjax.report.html import FigurePng, Note, Section, Table
from sirtjax.report.tables import fmt


def radiobiology_section(bed: BedResult, models: dict, title: str) -> Section:
    """The section of one dose's radiobiology (:func:`sirtjax.dosimetry.bed_map.workflow_radiobiology`)."""
    rows = tuple((v.name.replace("_", " "), fmt(v.volume_ml, 1), fmt(v.mean_dose_gy, 1), fmt(v.mean_bed_gy, 1),
                  fmt(v.mean_eqd2_gy, 1), fmt(v.eud_bed_gy, 1), fmt(v.ntcp, 3), fmt(v.tcp, 3)) for v in bed.vois)
    table = Table(("VOI", "Volume (ml)", "Mean dose (Gy)", "Mean BED (Gy)", "Mean EQD2 (Gy)", "EUD of BED (Gy)", "NTCP",
                   "TCP"), rows, "BED of a permanent 90Y implant (Dale 1985); EUD (Niemierko), LKB NTCP and Poisson TCP "
                                  "where the tissue model has their parameters.")
    models_text = "; ".join(
        f"{kind.replace('_', ' ')}: alpha/beta {m.alpha_beta_gy:g} Gy, repair half-time {m.repair_half_time_h:g} h"
        + (f", alpha {m.alpha_per_gy:g} /Gy" if m.alpha_per_gy is not None else "")
        + (f", {m.clonogens_per_ml:g} clonogens/ml" if m.clonogens_per_ml is not None else "")
        + (f", LKB TD50 {m.lkb.td50_gy:g} Gy ({m.lkb.quantity.upper()}), m {m.lkb.m:g}, n {m.lkb.n:g}" if m.lkb else "")
        + f" (source: {m.source})" for kind, m in models.items())
    skipped = [f"no tissue model: {', '.join(bed.unmodelled)}"] if bed.unmodelled else []
    skipped += [f"no voxel on the dose grid: {', '.join(bed.empty)}"] if bed.empty else []
    s = bed.bed_statistics
    blocks = [table, Note(f"Tissue models given by the user: {models_text}." + (f" Left out: {'; '.join(skipped)}."
                                                                                 if skipped else "")),
              FigurePng(dvh_png({"BED": (s.dvh_edges_gy, s.cdvh_fraction, [v.name for v in bed.vois])}),
                        "Cumulative BED-volume histograms per VOI (the x axis is BED in Gy).")]
    return Section(title, tuple(blocks))
