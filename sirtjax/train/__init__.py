"""Training of the segmentation models: data, augmentation, losses, jit-compiled steps, checkpoints."""

from sirtjax.train.augment import AugmentConfig
from sirtjax.train.config import TrainConfig, load_config, parse_config
from sirtjax.train.data import Case, make_case, msd_cases, phantom_cases, stack_cases
from sirtjax.train.loop import train, validate
from sirtjax.train.losses import segmentation_loss, soft_dice_loss

__all__ = [
    "AugmentConfig",
    "Case",
    "TrainConfig",
    "load_config",
    "make_case",
    "msd_cases",
    "parse_config",
    "phantom_cases",
    "segmentation_loss",
    "soft_dice_loss",
    "stack_cases",
    "train",
    "validate",
]
