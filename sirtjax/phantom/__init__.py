"""Synthetic SIRT studies with ground truth: anatomy, session postures, CT/MR/SPECT/PET images.

``generate_study(seed, config)`` makes a :class:`Study` (images keyed by file stem, truth,
manifest); ``write_study``/``read_study`` store it as a folder with DESIGN.md's file names;
``true_mapping(truth, fixed, moving)`` is the ground-truth registration between two sessions and
``true_displacement`` the same as an ITK-convention displacement field on a fixed grid.
"""

from sirtjax.phantom.config import PhantomConfig, ImageGrid
from sirtjax.phantom.deform import true_displacement, true_mapping
from sirtjax.phantom.study import IMAGE_FILES, Study, generate_study, read_study, write_study

__all__ = [
    "IMAGE_FILES",
    "ImageGrid",
    "PhantomConfig",
    "Study",
    "generate_study",
    "read_study",
    "true_displacement",
    "true_mapping",
    "write_study",
]
