"""Differentiable registration in physical space (thesis 5.3.3, paper 001): the public API.

``register`` / ``register_batch`` (:mod:`~sirtjax.registration.api`) with a :class:`RegistrationConfig`
(:mod:`~sirtjax.registration.config`), usually one of :data:`PRESETS`.
"""

from sirtjax.registration.api import RegistrationResult, register, register_batch
from sirtjax.registration.config import NonrigidStage, Overrides, RegistrationConfig, config_from_dict
from sirtjax.registration.levels import Pair, make_pair
from sirtjax.registration.nonrigid import Weights
from sirtjax.registration.presets import PRESETS

__all__ = ["PRESETS", "NonrigidStage", "Overrides", "Pair", "RegistrationConfig", "RegistrationResult", "Weights",
           "config_from_dict", "make_pair", "register", "register_batch"]
