"""Model geometry (thesis U-Nets, DeepMedic, residual U-Net3D), the tap convolution and weight files."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sirtjax.errors import InputError
from sirtjax.models import DeepMedic, ResidualUNet3D, build_model, lesion_unet, load_model, save_model, thesis_liver_unet
from sirtjax.models._layers import tap_conv
from sirtjax.models.deepmedic import block_mean


@partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x, kwargs):
    return nnx.merge(graphdef, state)(x, **kwargs)


def apply(model, x, **kwargs):
    """The model's forward under jit (compiled once per architecture and shape, not op by op)."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, x, kwargs)


def abstract_forward_shape(build, input_shape):
    """Output shape of a model built abstractly (no parameter values, no compute)."""
    graphdef, state = nnx.split(nnx.eval_shape(build))
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x).shape


def test_thesis_liver_unet_geometry():
    """Thesis 4.3.2: 189x162x162 -> 163x136x136 (z, y, x); checked by shape inference, no compute."""
    build = lambda: thesis_liver_unet(features=(2, 2, 2, 2), rngs=nnx.Rngs(0))  # noqa: E731
    model = nnx.eval_shape(build)
    assert model.output_shape((189, 162, 162)) == (163, 136, 136)
    assert abstract_forward_shape(build, (2, 189, 162, 162, 1)) == (2, 163, 136, 136, 1)
    assert model.margin() == (13, 13, 13)
    with pytest.raises(ValueError):
        model.output_shape((190, 162, 162))  # not divisible by 27


def test_thesis_liver_unet_real_forward_small():
    """A real forward on the smallest two-output-voxel-per-level size, batch 2, tiny widths."""
    model = thesis_liver_unet(features=(2, 3, 3, 3), rngs=nnx.Rngs(0))
    shape = model.input_shape_for((28, 28, 28))
    assert shape == (54, 54, 54)
    y = apply(model, jax.random.normal(jax.random.key(0), (2, *shape, 1)))
    assert y.shape == (2, 28, 28, 28, 1) and bool(jnp.all(jnp.isfinite(y)))


def test_lesion_unet_geometry():
    """Thesis 7.3.2.2: 180x172x86 (x, y, z) -> 92x84x42 at 1x1x3 mm; a real forward at the smallest valid size."""
    build = lambda: lesion_unet(features=(2, 2, 2, 2), rngs=nnx.Rngs(0))  # noqa: E731
    model = nnx.eval_shape(build)
    assert model.output_shape((86, 172, 180)) == (42, 84, 92)
    assert abstract_forward_shape(build, (1, 86, 172, 180, 1)) == (1, 42, 84, 92, 1)


def test_valid_unet_is_translation_equivariant_inside():
    """All-valid lesion U-Net: shifting the input by the pooling period shifts the output (no padding effects)."""
    model = lesion_unet(features=(2, 2, 2, 2), rngs=nnx.Rngs(1))
    shape = model.input_shape_for((17, 1, 1))
    big = jax.random.normal(jax.random.key(2), (1, shape[0] + 8, shape[1], shape[2], 1))
    a = apply(model, big[:, : shape[0]])  # output voxels z = 0 .. m-1 of the big image
    b = apply(model, big[:, 8 : 8 + shape[0]])  # output voxels z = 8 .. m+7
    assert a.shape[1] > 8
    np.testing.assert_allclose(a[:, 8:], b[:, :-8], atol=1e-5)  # float32 sums in another order


def test_residual_unet_same_size_and_dropout_key():
    model = ResidualUNet3D(features=(2, 4), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 6, 8, 12, 1))
    y = apply(model, x)
    assert y.shape == (2, 6, 8, 12, 1)
    np.testing.assert_array_equal(apply(model, x), y)  # no key: deterministic inference
    assert not np.allclose(apply(model, x, dropout_key=jax.random.key(1)), y)
    with pytest.raises(ValueError):
        jax.eval_shape(model, jax.ShapeDtypeStruct((1, 5, 8, 8, 1), jnp.float32))


@pytest.mark.parametrize(("kernel", "padding"), [((3, 3, 3), "VALID"), ((1, 3, 3), "SAME")])
def test_tap_conv_matches_lax(padding, kernel):
    x = jax.random.normal(jax.random.key(0), (2, 7, 9, 8, 3))
    w = jax.random.normal(jax.random.key(1), (*kernel, 3, 5))
    ref = jax.jit(jax.lax.conv_general_dilated, static_argnums=(2, 3), static_argnames="dimension_numbers")(x, w, (1, 1, 1), padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    ours = jax.jit(tap_conv, static_argnums=(2, 3))(x, w, (1, 1, 1), padding)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)  # float32 summation order  # float32 summation order


def test_save_load_roundtrip(tmp_path):
    spec = {"arch": "thesis_liver_unet", "features": [2, 3, 3, 3], "spacing_mm": [3, 3, 3]}
    model = build_model(spec, rngs=nnx.Rngs(3))
    save_model(model, spec, tmp_path / "m")
    loaded, spec2 = load_model(tmp_path / "m")
    x = jax.random.normal(jax.random.key(0), (2, 54, 54, 54, 1))  # shares the compile of the forward test
    np.testing.assert_array_equal(apply(model, x), apply(loaded, x))
    assert spec2 == spec
    with pytest.raises(InputError):
        load_model(tmp_path / "nothing")
    save_model(build_model({**spec, "features": [2, 2, 2, 3]}, rngs=nnx.Rngs(0)), spec, tmp_path / "bad")
    with pytest.raises(InputError, match="shape"):
        load_model(tmp_path / "bad")


def test_instance_norm_stage_matches_numpy():
    """norm="instance": each conv output is normalised per example and channel over z, y, x (numpy reference)."""
    from sirtjax.models._layers import ConvStage

    stage = ConvStage(2, 3, [(3, 3, 3)], ["SAME"], norm="instance", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 5, 6, 7, 2)) * 4.0 + 3.0
    conv = np.asarray(stage.convs[0](x))
    mean = conv.mean(axis=(1, 2, 3), keepdims=True)
    ref = (conv - mean) / np.sqrt(conv.var(axis=(1, 2, 3), keepdims=True) + 1e-6)  # flax GroupNorm epsilon
    ref = np.where(ref > 0, ref, 0.01 * ref)  # leaky ReLU, slope 0.01
    np.testing.assert_allclose(np.asarray(stage(x)), ref, atol=1e-4)  # float32 variance
    with pytest.raises(ValueError, match="norm"):
        ConvStage(2, 3, [(3, 3, 3)], ["SAME"], norm="batch", rngs=nnx.Rngs(0))


def test_instance_norm_model_saves_and_loads(tmp_path):
    """A thesis U-Net with instance norm round-trips through model.json + weights.npz (norm scales included)."""
    spec = {"arch": "thesis_liver_unet", "features": [2, 2, 2, 2], "norm": "instance"}
    model = build_model(spec, rngs=nnx.Rngs(params=3))
    save_model(model, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m")
    assert loaded_spec["norm"] == "instance"
    x = jax.random.normal(jax.random.key(0), (1, 27, 27, 27, 1))
    np.testing.assert_array_equal(np.asarray(apply(loaded, x)), np.asarray(apply(model, x)))


def test_deepmedic_geometry():
    """Thesis 3.3.2's pathways (factors 1, 5, 15; ten convolutions each) on a 105^3 tile -> 45^3; shapes only, no compute."""
    build = lambda: DeepMedic(features=(2, 2, 2, 2, 2), rngs=nnx.Rngs(0))  # noqa: E731
    model = nnx.eval_shape(build)
    assert model.n_convs == 10 and model.multiple == 15 and model.margin() == (30, 30, 30)
    assert model.input_shape_for((45, 40, 1)) == (105, 105, 75)
    assert abstract_forward_shape(build, (2, 105, 105, 75, 1)) == (2, 45, 45, 15, 1)
    for bad in ((104, 105, 105), (60, 105, 105)):  # not a multiple of 15; no output left
        with pytest.raises(ValueError, match="multiples of 15"):
            model.output_shape(bad)
    with pytest.raises(ValueError, match="context"):
        DeepMedic(features=(2, 2, 2, 2, 2), context=8, rngs=nnx.Rngs(0))


def test_block_mean_matches_scipy():
    """The pathways' down-sampling is the mean of each factor^3 block: scipy's uniform filter sampled at block centres."""
    from scipy import ndimage

    x = np.random.default_rng(0).normal(size=(1, 9, 6, 12, 2)).astype(np.float32)
    ref = ndimage.uniform_filter(x, size=(1, 3, 3, 3, 1), mode="nearest")[:, 1::3, 1::3, 1::3]
    np.testing.assert_allclose(np.asarray(block_mean(jnp.asarray(x), 3)), ref, rtol=1e-5, atol=1e-6)


def test_deepmedic_sees_the_tile_edge_only_through_the_low_pathways():
    """A voxel outside the normal pathway's field changes the output; with the low pathways' first kernels zeroed it does not."""
    model = DeepMedic(features=(2, 3), factors=(3, 6), context=6, fusion_features=4, rngs=nnx.Rngs(0))
    shape = model.input_shape_for((6, 6, 6))
    assert shape == (18, 18, 18) and model.output_shape(shape) == (6, 6, 6)
    x = jax.random.normal(jax.random.key(0), (1, *shape, 1))
    poked = x.at[0, 1, 1, 1, 0].add(50.0)  # the normal pathway sees voxels 2..15 (output 6..11 and 4 convolutions)
    inside = x.at[0, 8, 8, 8, 0].add(50.0)
    assert not np.allclose(apply(model, x), apply(model, poked))
    for pathway in model.low:
        conv = pathway[0].convs[0]
        conv.kernel.set_value(jnp.zeros_like(conv.kernel.get_value()))
    np.testing.assert_array_equal(np.asarray(apply(model, x)), np.asarray(apply(model, poked)))
    assert not np.allclose(apply(model, x), apply(model, inside))


def test_deepmedic_saves_and_loads(tmp_path):
    """A DeepMedic spec (factors, context, fusion width, instance norm) round-trips through model.json + weights.npz."""
    spec = {"arch": "deepmedic", "features": [2, 3], "factors": [3, 6], "context": 6, "fusion_features": 4, "norm": "instance"}
    model = build_model(spec, rngs=nnx.Rngs(params=1))
    save_model(model, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m")
    assert isinstance(loaded, DeepMedic) and loaded_spec == spec and loaded.factors == (3, 6)
    x = jax.random.normal(jax.random.key(0), (1, 18, 18, 18, 1))
    np.testing.assert_array_equal(np.asarray(apply(loaded, x)), np.asarray(apply(model, x)))


def test_widened_liver_unet_computes_the_same_and_its_new_channels_learn(tmp_path):
    """A wider thesis U-Net warm-started from a narrower one gives the same logits, and its new channels get gradients."""
    from sirtjax.models.store import param_arrays, warm_start

    old_spec = {"arch": "thesis_liver_unet", "features": [2, 3, 3, 4], "norm": "instance"}
    old = build_model(old_spec, rngs=nnx.Rngs(1))
    save_model(old, old_spec, tmp_path / "old")
    new_spec = {**old_spec, "features": [2, 5, 6, 8]}  # level 1 keeps its width, the others grow
    wide = build_model(new_spec, rngs=nnx.Rngs(2))
    warm_start(wide, new_spec, tmp_path / "old")
    x = jax.random.normal(jax.random.key(0), (1, 54, 54, 54, 1))
    np.testing.assert_allclose(np.asarray(apply(wide, x)), np.asarray(apply(old, x)), atol=2e-5)
    kernel = param_arrays(wide)["up/0/convs/0/kernel"]  # input: 8 up-sampled, then 6 skip channels; 6 outputs
    assert kernel.shape[-2:] == (14, 6)
    np.testing.assert_array_equal(kernel[..., [4, 5, 6, 7, 11, 12, 13], :3], 0.0)  # new inputs do not reach old outputs
    np.testing.assert_array_equal(kernel[..., [0, 1, 2, 3, 8, 9, 10], :3], param_arrays(old)["up/0/convs/0/kernel"])
    assert np.all(np.std(kernel[..., 3:], axis=(0, 1, 2, 3)) > 0)  # new outputs are freshly initialised, not copies

    graphdef, params = nnx.split(wide, nnx.Param)
    loss = lambda p: jnp.mean(jax.nn.sigmoid(nnx.merge(graphdef, p)(x)))  # noqa: E731
    grads = {"/".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(jax.grad(loss)(params))}
    assert np.abs(grads["up/0/convs/0/kernel"][..., [4, 5, 6, 7, 11, 12, 13], :3]).max() > 0  # the zeroed block learns


def test_warm_start_refuses_what_it_cannot_widen(tmp_path):
    """A narrower target or another architecture is refused with the weights file named."""
    from sirtjax.models.store import warm_start

    spec = {"arch": "thesis_liver_unet", "features": [2, 3, 3, 4], "norm": "instance"}
    save_model(build_model(spec, rngs=nnx.Rngs(1)), spec, tmp_path / "old")
    narrow = {**spec, "features": [2, 2, 3, 4]}
    with pytest.raises(InputError, match="weights.npz.*none narrower"):
        warm_start(build_model(narrow, rngs=nnx.Rngs(0)), narrow, tmp_path / "old")
    other = {"arch": "lesion_unet", "features": [2, 4, 4, 4]}
    with pytest.raises(InputError, match="weights.npz.*only a thesis_liver_unet"):
        warm_start(build_model(other, rngs=nnx.Rngs(0)), other, tmp_path / "old")


def test_frozen_instance_norms_give_the_same_logits_on_the_tile_they_were_measured_on(tmp_path):
    """Norms frozen at one tile's statistics and folded into the convolutions reproduce that tile's logits; another
    tile's differ (the norms no longer adapt), and warm_start freezes a saved model the same way."""
    from sirtjax.models.freeze_norm import fold_instance_norm, instance_norm_statistics
    from sirtjax.models.store import load_param_arrays, param_arrays, warm_start

    spec = {"arch": "thesis_liver_unet", "features": [2, 3, 3, 4], "norm": "instance"}
    model = build_model(spec, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)  # norm scales and biases away from 1 and 0, so folding them in is tested
    load_param_arrays(model, {k: (v + 0.3 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in param_arrays(model).items()})
    save_model(model, spec, tmp_path / "norm")
    x = jax.random.normal(jax.random.key(0), (1, 54, 54, 54, 1))
    stats = instance_norm_statistics(model, [x])
    assert len(stats) == 14 and stats["down/0/norms/0"][0].shape == (2,)
    frozen_spec = {**spec, "norm": None}
    frozen = build_model(frozen_spec, rngs=nnx.Rngs(2))
    load_param_arrays(frozen, fold_instance_norm(param_arrays(model), stats))
    np.testing.assert_allclose(np.asarray(frozen(x)), np.asarray(model(x)), atol=2e-4)
    other = 2.0 * jax.random.normal(jax.random.key(1), x.shape) + 1.0
    assert np.abs(np.asarray(frozen(other)) - np.asarray(model(other))).max() > 0.1

    started = build_model(frozen_spec, rngs=nnx.Rngs(3))
    warm_start(started, frozen_spec, tmp_path / "norm", batches=iter([x]))
    np.testing.assert_allclose(np.asarray(started(x)), np.asarray(model(x)), atol=2e-4)
    with pytest.raises(InputError, match="norms are frozen at the same features"):
        wider = {**frozen_spec, "features": [2, 4, 4, 4]}
        warm_start(build_model(wider, rngs=nnx.Rngs(0)), wider, tmp_path / "norm", batches=iter([x]))
    with pytest.raises(InputError, match="cannot freeze its norms: no batches"):
        warm_start(build_model(frozen_spec, rngs=nnx.Rngs(0)), frozen_spec, tmp_path / "norm")
    save_model(frozen, frozen_spec, tmp_path / "plain")
    with pytest.raises(InputError, match="only instance norms can be frozen"):
        warm_start(build_model(spec, rngs=nnx.Rngs(0)), spec, tmp_path / "plain")
