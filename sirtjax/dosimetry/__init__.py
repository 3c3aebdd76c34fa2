"""90Y SIRT dosimetry: constants, activity maps, LDM/VSV dose, VOI statistics, prescription.

Modules: ``constants`` (named constant sets), ``activity`` (SPECT counts / PET Bq/ml -> GBq per
voxel, LSF, T/N), ``kernels`` and ``point_kernel`` (voxel S values for any voxel size), ``dose``
(LDM, FFT convolution, CT density), ``statistics`` (D_x, V_x, DVH for all VOIs at once),
``prescription`` (mono, partition, BSA), ``limits`` (structured warnings), ``masks``, ``voxel``
(a whole study: images in, dose and report out) and ``outputs`` (the files of ``sirtjax dose``).
"""

from sirtjax.dosimetry.activity import (activity_from_bq_per_ml, activity_from_counts, lung_shunt_fraction,
                                        tumour_to_normal_ratios)
from sirtjax.dosimetry.compartments import MeasuredCompartments, measure_compartments
from sirtjax.dosimetry.constants import (LIVER_DENSITY_G_ML, DoseConstants, constant_sets, dose_factor_gy_kg_per_gbq,
                                         get_constants)
from sirtjax.dosimetry.dose import (convolve_same, dose_ldm, dose_vsv, hu_to_density_g_ml, voxel_volume_ml,
                                    vsv_gy_per_gbq)
from sirtjax.dosimetry.kernels import VoxelKernel, load_vsv_octant, tabulated_voxel_sizes_mm, voxel_kernel
from sirtjax.dosimetry.limits import check_lung_dose, check_lung_shunt
from sirtjax.plausibility import ResultWarning
from sirtjax.dosimetry.prescription import (Compartment, Prescription, body_surface_area_m2, bsa_method, lung_dose_gy,
                                            mono_compartment, partition, resin_lsf_reduction)
from sirtjax.dosimetry.statistics import VoiStatistics, voi_statistics
from sirtjax.dosimetry.voxel import DoseResult, voxel_dosimetry

__all__ = [
    "activity_from_bq_per_ml", "activity_from_counts", "lung_shunt_fraction",
    "tumour_to_normal_ratios", "LIVER_DENSITY_G_ML", "DoseConstants", "constant_sets",
    "dose_factor_gy_kg_per_gbq", "get_constants", "convolve_same", "dose_ldm", "dose_vsv",
    "hu_to_density_g_ml", "voxel_volume_ml", "vsv_gy_per_gbq", "VoxelKernel", "load_vsv_octant",
    "tabulated_voxel_sizes_mm", "voxel_kernel", "ResultWarning", "check_lung_dose",
    "check_lung_shunt", "Compartment", "Prescription", "body_surface_area_m2", "bsa_method",
    "lung_dose_gy", "mono_compartment", "partition", "resin_lsf_reduction", "VoiStatistics",
    "voi_statistics", "DoseResult", "voxel_dosimetry", "MeasuredCompartments", "measure_compartments",
]
