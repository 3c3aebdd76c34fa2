"""The named registration settings (data only); why each value is what it is: benchmarks/registration/PRESETS.md."""

from __future__ import annotations

import dataclasses

from sirtjax.registration.config import RegistrationConfig

# liver masks: affine on the masks, a coarse B-spline image stage on the whole body, then the masks alone
_CNN_GUIDED = RegistrationConfig(affine_on="segmentation", candidates=1, affine_max_strain=None, nonrigid_image=False,
                                 w_image=0.0, samples=8192, nonrigid_iterations=40, finest_mm=3.0, nonrigid_levels=1,
                                 field_spacing_mm=9.0, image_field_mm=40.0, image_field_levels=2,
                                 image_field_iterations=150, image_field_w_reg=5.0, w_reg=100.0)

PRESETS: dict[str, RegistrationConfig] = {
    # thesis 5.3.3: images only; MI affine, then MI + springs + folding barrier on the finest two levels
    "image-based": RegistrationConfig(affine_on="images", fold_weight=100.0, nonrigid_levels=2),
    "cnn-guided": _CNN_GUIDED,
    # cnn-guided with label maps of the liver and landmarks, and the folding barrier
    "cnn-lm-guided": dataclasses.replace(_CNN_GUIDED, fold_weight=100.0),
}
