"""Flax NNX segmentation models: the thesis U-Nets (valid convolutions), the thesis DeepMedic and a residual U-Net3D."""

from sirtjax.models.deepmedic import DeepMedic
from sirtjax.models.residual_unet import ResidualUNet3D
from sirtjax.models.store import build_model, load_model, param_arrays, save_model
from sirtjax.models.valid_unet import StageSpec, ValidUNet, lesion_unet, thesis_liver_unet

__all__ = [
    "DeepMedic",
    "ResidualUNet3D",
    "StageSpec",
    "ValidUNet",
    "build_model",
    "lesion_unet",
    "load_model",
    "param_arrays",
    "save_model",
    "thesis_liver_unet",
]
