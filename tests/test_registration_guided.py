"""register_checked: the preset chosen from the guidance at hand, the guidance each preset gets, and the checks."""


import jax
import numpy as np
import pytest

from sirtjax.registration import PRESETS, Overrides
from sirtjax.registration.guided import PRESET_GUIDANCE, Guidance, choose_preset, register_checked
from sirtjax.volume import make_volume, world_grid

# one level at the pair's own spacing (3.5 mm), 20 steps, no images-only stage
QUICK = Overrides(levels=1, finest_mm=3.0, iterations=20, image_stages=False)


@pytest.mark.parametrize(("masks", "labels", "preset"), [
    (True, True, "cnn-lm-guided"), (False, True, "cnn-lm-guided"), (True, False, "cnn-guided"), (False, False, "image-based"),
])
def test_the_preset_follows_the_guidance(masks, labels, preset):
    assert choose_preset(masks=masks, labels=labels) == preset


def test_every_preset_names_the_guidance_it_needs():
    assert set(PRESET_GUIDANCE) == set(PRESETS)
    vol = make_volume(np.zeros((2, 2, 2), np.uint8), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="the cnn-guided preset needs --moving-mask$"):
        Guidance(fixed_mask=vol).for_preset("cnn-guided")
    assert Guidance(fixed_mask=vol, moving_mask=vol).for_preset("image-based") == {}


@pytest.fixture(scope="module")
def pair():
    fixed = make_volume(np.zeros((14, 16, 18), np.float32), (3.5, 3.0, 3.2), (-27.0, -24.0, -29.0),
                        np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    p = np.asarray(world_grid(fixed))

    def scene(shift):
        liver = np.linalg.norm((p - shift) / [13.0, 10.0, 11.0], axis=-1) < 1
        body = np.linalg.norm((p - shift) / [24.0, 22.0, 26.0], axis=-1) < 1
        return fixed.with_array((40.0 * body + 60.0 * liver).astype(np.float32)), fixed.with_array(liver.astype(np.uint8))

    return scene(np.zeros(3)), scene(np.array([3.0, -2.0, 2.0]))


def test_register_checked_reports_the_liver_jacobian_only_with_a_fixed_liver(pair):
    (fixed, fixed_liver), (moving, moving_liver) = pair
    key = jax.random.key(0)
    guided = register_checked(fixed, moving, Guidance(fixed_liver, moving_liver), overrides=QUICK, key=key)
    assert guided.preset == "cnn-guided"
    assert guided.config == QUICK.apply(PRESETS["cnn-guided"])
    assert 0.0 <= guided.jacobian_liver["fraction_nonpositive"] <= 1.0 and guided.jacobian_liver != guided.jacobian
    assert guided.warnings == ()  # no folding on a smooth translation
    plain = register_checked(fixed, moving, overrides=QUICK, key=key)
    assert plain.preset == "image-based" and plain.jacobian_liver is None
    with pytest.raises(ValueError, match="unknown preset 'rigid'"):
        register_checked(fixed, moving, preset="rigid", key=key)
