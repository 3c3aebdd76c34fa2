"""Ensembles of segmentation networks: the mean of the members' probabilities, assembled from model folders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import expit, softmax

from sirtjax.errors import InputError
from sirtjax.models import build_model, load_model, save_model
from sirtjax.models.ensemble import Ensemble, mean_probability_logits
from sirtjax.models.store import save_ensemble
from sirtjax.train.config import parse_config

SPEC = {"arch": "thesis_liver_unet", "features": [2, 3, 3, 3], "spacing_mm": [3, 3, 3], "norm": "instance"}


def test_mean_probability_logits_give_the_mean_probability():
    """sigmoid (1 channel) and softmax (3 channels) of the result are the members' mean probability (scipy), and
    saturated members stay finite."""
    logits = np.random.default_rng(0).normal(0.0, 4.0, (3, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(expit(np.asarray(mean_probability_logits(jnp.asarray(logits)))), expit(logits).mean(0), rtol=1e-5)
    logits3 = np.random.default_rng(1).normal(0.0, 4.0, (2, 5, 3)).astype(np.float32)
    np.testing.assert_allclose(softmax(np.asarray(mean_probability_logits(jnp.asarray(logits3))), axis=-1),
                               softmax(logits3, axis=-1).mean(0), rtol=1e-5, atol=1e-7)
    saturated = mean_probability_logits(jnp.asarray([[[200.0]], [[-200.0]]]))
    np.testing.assert_allclose(np.asarray(saturated), 0.0, atol=1e-5)  # one member sure of each class: p = 0.5


def test_saved_ensemble_loads_and_averages_its_members(tmp_path):
    """save_ensemble of two trained folders loads as one network whose probability is the mean of the two; it keeps
    the members' tile geometry, and refuses folders whose specs differ or that are ensembles already."""
    members = [build_model(SPEC, rngs=nnx.Rngs(params=seed)) for seed in (1, 2)]
    for i, m in enumerate(members):
        save_model(m, {**SPEC, "val_dice": 0.9 + i / 100}, tmp_path / f"m{i}")
    save_ensemble([tmp_path / "m0", tmp_path / "m1"], tmp_path / "ens")
    ensemble, spec = load_model(tmp_path / "ens")
    assert isinstance(ensemble, Ensemble) and spec["members"] == 2 and spec["member_val_dice"] == [0.9, 0.91]
    assert ensemble.input_shape_for((28, 28, 28)) == members[0].input_shape_for((28, 28, 28)) == (54, 54, 54)
    x = jax.random.normal(jax.random.key(0), (1, 54, 54, 54, 1))
    mean = (jax.nn.sigmoid(members[0](x)) + jax.nn.sigmoid(members[1](x))) / 2
    np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(ensemble(x))), np.asarray(mean), atol=1e-6)

    save_model(build_model({**SPEC, "norm": None}, rngs=nnx.Rngs(0)), {**SPEC, "norm": None}, tmp_path / "plain")
    with pytest.raises(InputError, match="norm"):
        save_ensemble([tmp_path / "m0", tmp_path / "plain"], tmp_path / "bad")
    with pytest.raises(InputError, match="ensemble already"):
        save_ensemble([tmp_path / "ens", tmp_path / "ens"], tmp_path / "bad")
    with pytest.raises(InputError, match="at least 2"):
        save_ensemble([tmp_path / "m0"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_an_ensemble_is_not_trained():
    """A training config whose model spec has members is refused: members are trained apart, then assembled."""
    with pytest.raises(InputError, match="members"):
        parse_config({"model": {**SPEC, "members": 2}, "data": {"kind": "phantom"}, "patch_out": [28, 28, 28], "steps": 10},
                     source="cfg.json")
