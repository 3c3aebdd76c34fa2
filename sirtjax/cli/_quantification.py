"""The options of an emission image's resolution and its lesions' recovery curve, checked once for ``sirtjax dose``
and ``sirtjax verify`` (docs/pet-quantification.md)."""

from __future__ import annotations

from pathlib import Path


def checked_recovery_curve(fwhm_mm: dict[str, float | None], match_fwhm_mm: float | None, recovery_csv: Path | None):
    """The lesions' recovery curve of a dose (None: no correction), after checking the resolution options.

    ``fwhm_mm``: each image's resolution option (its name to its value), the dose's own image first. The curve is the
    CSV's, else the analytic one at the resolution the dose is computed at (``--match-fwhm-mm``, else the first
    image's), else None. Raises InputError naming the option: a resolution outside (0, 100) mm, a match without every
    image's resolution or sharper than one of them (it only blurs), or a measured curve with a match (it holds at the
    scanner's resolution).
    """
    from sirtjax.dosimetry.recovery import gaussian_recovery_curve, read_recovery_csv
    from sirtjax.errors import InputError

    for option, value in (*fwhm_mm.items(), ("--match-fwhm-mm", match_fwhm_mm)):
        if value is not None and not 0 < value < 100:  # NaN fails this too
            raise InputError(option, f"a resolution in (0, 100) mm, got {value:g}")
    if match_fwhm_mm is not None and any(v is None or match_fwhm_mm < v for v in fwhm_mm.values()):
        raise InputError("--match-fwhm-mm", f"needs {' and '.join(fwhm_mm)}, and a target no sharper than "
                                            f"{'either' if len(fwhm_mm) > 1 else 'it'} (it only blurs)")
    if match_fwhm_mm is not None and recovery_csv is not None:
        raise InputError("--recovery-csv", "a measured curve holds at the scanner's resolution, not after "
                                           "--match-fwhm-mm blurs the image (without the CSV, the analytic curve follows)")
    resolution = match_fwhm_mm or next(iter(fwhm_mm.values()))  # of the image the dose is computed from
    return read_recovery_csv(recovery_csv) if recovery_csv else gaussian_recovery_curve(resolution) if resolution else None
