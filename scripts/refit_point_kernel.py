"""Refit the 90Y soft-tissue point kernel to the shipped voxel S-value tables and rewrite its shipped CSV.

    python scripts/refit_point_kernel.py

The fit is `sirtjax.dosimetry.point_kernel.fit_point_kernel` (its module docstring says how); this script only
reads the 13 Lanconelli et al. 2012 tables and writes ``sirtjax/data/vsv/y90_soft_point_kernel.csv``.
"""

from __future__ import annotations

from sirtjax.dosimetry.kernels import load_vsv_octant, tabulated_voxel_sizes_mm
from sirtjax.dosimetry.point_kernel import NODES_MM, fit_point_kernel, point_kernel_file


def main() -> None:
    """Fit q at NODES_MM to every tabulated voxel size and write it with a header naming its origin."""
    q = fit_point_kernel({h: load_vsv_octant(h) for h in tabulated_voxel_sizes_mm()})
    lines = [
        "# 90Y soft-tissue point kernel q(r), mGy/(MBq*s)*mm^2, fitted by sirtjax.dosimetry.point_kernel",
        "# to the 13 Lanconelli et al. 2012 soft-tissue voxel S-value tables in this folder.",
        "# columns: r_mm, q",
        *(f"{r:.4f},{v:.8e}" for r, v in zip(NODES_MM, q)),
    ]
    target = point_kernel_file()
    with open(str(target), "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
