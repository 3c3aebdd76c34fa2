"""The HTML report of the planning and verification workflows: figures, tables and the page itself.

``colours`` gives each VOI name its colour (the same in every figure and in RT-Struct);
``figures`` makes PNG figures from Volumes and arrays (fused slices with VOI contours,
registration checkerboards and contour overlays, cumulative DVHs); ``tables`` turns the JSON-ready
results (study, prescriptions, dose statistics, plan-vs-verification differences, constants) into
tables and sections; ``html`` assembles sections into one self-contained HTML page and writes it
atomically. Everything is a pure function of its inputs except :func:`write_report`.
"""

from sirtjax.report.colours import voi_colour, voi_colours
from sirtjax.report.figures import (CT_SOFT_TISSUE_WINDOW_HU, checkerboard_png, contour_overlay_png, dvh_figure,
                                    dvh_png, fused_slices_figure, fused_slices_png, percentile_window)
from sirtjax.report.html import FigurePng, KeyValues, Note, Section, Table, render_report, write_report
from sirtjax.report.tables import (comparison_table, dose_table, prescription_table,
                                   provenance_section, study_section)

__all__ = [
    "voi_colour", "voi_colours",
    "CT_SOFT_TISSUE_WINDOW_HU", "checkerboard_png", "contour_overlay_png", "dvh_figure", "dvh_png",
    "fused_slices_figure", "fused_slices_png",
    "percentile_window", "FigurePng", "KeyValues", "Note", "Section", "Table", "render_report", "write_report",
    "comparison_table", "dose_table", "prescription_table",
    "provenance_section", "study_section",
]
