"""The options of the dose-uncertainty ensemble, shared by ``sirtjax dose`` and ``sirtjax plan``; their checks are
:func:`sirtjax.dosimetry.uncertainty.stated_model`'s."""

from __future__ import annotations

from typing import Annotated

import typer

# The defaults are stated assumptions, printed in every report that uses them; replace them with your own. 5 % on
# the activity calibration, 2 percentage points on the lung shunt, 2 mm on the outlines: the shipped liver model's
# mean outline offset is far smaller on phantoms (RMS 0.4 mm, benchmarks/dosimetry/RESULTS.md) but its Dice on real
# CT is lower (issue 26), and a drawn outline differs between observers by millimetres.
CALIBRATION_SD, RESIDUAL, RESIDUAL_SD, LUNG_SHUNT_SD, BOUNDARY_SD_MM = 0.05, 0.0, 0.0, 0.02, 2.0
REGISTRATIONS = 3  # more registrations of the lesions' source image, with other sampling keys
DEMO_MEMBERS, DEMO_REGISTRATIONS = 16, 2

Members = Annotated[int, typer.Option("--uncertainty", help="Size N of the dose-uncertainty ensemble (0: none).")]
CalibrationSd = Annotated[float, typer.Option("--calibration-sd", help="Relative sd of the activity calibration.")]
Residual = Annotated[float, typer.Option("--residual", help="Fraction left in the vial and catheter.")]
ResidualSd = Annotated[float, typer.Option("--residual-sd", help="Its sd.")]
LungShuntSd = Annotated[float, typer.Option("--lung-shunt-sd", help="Absolute sd of the lung shunt fraction.")]
Registrations = Annotated[int, typer.Option("--registration-samples", help="More registrations of mapped lesions.")]
BoundarySd = Annotated[float, typer.Option("--boundary-sd-mm", help="Sd (mm) of the liver and lesion outlines.")]

