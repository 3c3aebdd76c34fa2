"""The named registration settings (data only); why each value is what it is: benchmarks/registration/PRESETS.md."""

from __future__ import annotations

import dataclasses

from sirtjax.registration.config import AffineStage, NonrigidStage, Pyramid, RegistrationConfig

# a coarse B-spline field (nodes 40 mm apart) fitted by MI on the whole body's images, on the finest two levels
_IMAGE_STAGE = NonrigidStage(images_only=True, levels=2, iterations=150, early_stop=False, samples=4096,
                             field_spacing_mm=40.0, field_order=3, fold_weight=100.0, w_reg=5.0)

# liver masks: affine on the masks, the coarse image stage, then the masks alone
_CNN_GUIDED = RegistrationConfig(
    pyramid=Pyramid(finest_mm=3.0),
    affine=AffineStage(on="segmentation", candidates=1, max_strain=None, samples=8192),
    stages=(_IMAGE_STAGE,
            NonrigidStage(levels=1, iterations=40, samples=8192, image_term=False, w_image=0.0, field_spacing_mm=9.0,
                          w_reg=100.0)))

PRESETS: dict[str, RegistrationConfig] = {
    # thesis 5.3.3: images only; MI affine, the coarse image stage, then MI + springs + folding barrier on the
    # finest two levels (6 and 3 mm), the field's nodes at least 6 mm apart
    "image-based": RegistrationConfig(pyramid=Pyramid(finest_mm=3.0), stages=(
        _IMAGE_STAGE, NonrigidStage(levels=2, fold_weight=100.0, w_reg=40.0, field_spacing_mm=6.0))),
    "cnn-guided": _CNN_GUIDED,
    # cnn-guided with label maps of the liver and landmarks, and the folding barrier
    "cnn-lm-guided": dataclasses.replace(_CNN_GUIDED, stages=(
        _CNN_GUIDED.stages[0], dataclasses.replace(_CNN_GUIDED.stages[1], fold_weight=100.0))),
}
