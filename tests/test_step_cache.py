"""Registration steps kept on disk (jax.export): a fresh step loads them without tracing, same results."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sirtjax.registration.optimise import Convergence, LevelOptimiser, adam_cosine, make_step, run_level
from sirtjax.registration.step_cache import _SUBFOLDER

TRACES = []


def _objective(params, data, weights, key):
    """A least-squares fit with a random weight per point: exercises params, data and the PRNG key."""
    TRACES.append(1)  # runs only while JAX traces
    w = jax.random.uniform(key, data["x"].shape)
    r = params["a"] * data["x"] + params["b"] - data["y"]
    loss = jnp.mean(w * r * r)
    return loss, {"fit": loss, "scale": weights}


def _run(step, n_points: int, seed: int = 0):
    x = jnp.linspace(-1.0, 1.0, n_points)[None]
    data = {"x": x, "y": 3.0 * x - 0.5}
    params = {"a": jnp.zeros((1,)), "b": jnp.zeros((1,))}
    return run_level(step, params, LevelOptimiser("adam", 0.3, 60), data, jnp.ones((1,)), jax.random.key(seed),
                     Convergence(60, min_iterations=60))


@pytest.fixture
def cache_dir(tmp_path):
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path))
    yield tmp_path
    jax.config.update("jax_compilation_cache_dir", previous)


def _entries(folder):
    return sorted((folder / _SUBFOLDER).glob("*.bin"))


def test_a_new_step_loads_the_stored_program_without_tracing(cache_dir):
    params, log = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v1"), 64)
    assert len(_entries(cache_dir)) == 1
    before = len(TRACES)
    params2, log2 = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v1"), 64)  # as a new process would: a fresh jit, same key
    assert len(TRACES) == before
    np.testing.assert_array_equal(log2.loss_history, log.loss_history)
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    assert set(log2.last_terms) == {"fit", "scale", "loss"}
    assert float(params2["a"][0]) == pytest.approx(3.0, abs=0.3)


def test_stored_program_matches_the_plain_step(cache_dir):
    jax.config.update("jax_compilation_cache_dir", None)
    plain, log_plain = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v2"), 48, seed=3)
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    assert not (cache_dir / _SUBFOLDER).exists()
    stored, log_stored = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v2"), 48, seed=3)
    np.testing.assert_allclose(log_stored.loss_history, log_plain.loss_history, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stored, plain)


def test_new_shapes_and_names_get_their_own_entries_and_a_broken_entry_is_replaced(cache_dir):
    _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3"), 32)
    _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3"), 40)
    _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3 other settings"), 32)
    entries = _entries(cache_dir)
    assert len(entries) == 3
    for e in entries:
        e.write_bytes(b"\x05\x00\x00\x00[]")  # truncated: names but no program
    before = len(TRACES)
    params, _ = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3"), 32)
    assert len(TRACES) == before + 1  # traced and exported again
    assert float(params["a"][0]) == pytest.approx(3.0, abs=0.3)
    assert max(e.stat().st_size for e in _entries(cache_dir)) > 100


def test_registration_steps_round_trip_through_the_cache(cache_dir, monkeypatch):
    """The real steps (LevelData pytrees, batched PRNG keys): exported once, then loaded by fresh steps with equal results."""
    from sirtjax.registration import affine, api, nonrigid, pyramid, stages, step_cache
    from sirtjax.registration import RegistrationConfig, register
    from sirtjax.volume import make_volume, world_grid

    fixed = make_volume(np.zeros((12, 14, 16), np.float32), (4.0, 3.5, 5.0), (-30.0, -25.0, -30.0))
    p = np.asarray(world_grid(fixed))
    liver = np.linalg.norm((p - [4.0, 0.0, 2.0]) / [14.0, 11.0, 12.0], axis=-1) < 1
    img = (50.0 * (np.linalg.norm(p / [28.0, 22.0, 26.0], axis=-1) < 1) + 60.0 * liver).astype(np.float32)
    moving = make_volume(np.roll(img, 1, axis=2), (4.0, 3.5, 5.0), (-30.0, -25.0, -30.0))
    masks = dict(fixed_mask=fixed.with_array(liver.astype(np.uint8)), moving_mask=moving.with_array(np.roll(liver, 1, 2).astype(np.uint8)))
    config = RegistrationConfig(levels=2, finest_mm=None, affine_on="segmentation", affine_iterations=20,
                                nonrigid_iterations=20, candidates=1, neighbourhood=6)
    exports = []
    real_export = step_cache.export.export
    monkeypatch.setattr(step_cache.export, "export", lambda fn: exports.append(1) or real_export(fn))

    def fresh_run():  # as a new process: no step or helper program in memory
        affine._affine_step_program.cache_clear()
        nonrigid._nonrigid_step_program.cache_clear()
        for program in (pyramid._smooth_and_shrink_jit, stages._upsample, api._finish_arrays):
            program._programs.clear()
        return register(fixed.with_array(img), moving, config=config, **masks)

    first = fresh_run()
    n = len(exports)
    assert n >= 4 + 2 and len(_entries(cache_dir)) == n  # two levels, two stages; pyramids, the final warp
    second = fresh_run()
    assert len(exports) == n
    np.testing.assert_array_equal(second.displacement.array, first.displacement.array)
    assert float(np.abs(first.displacement.array).max()) > 1.0  # it did move (a one-voxel shift)


def test_a_cached_program_loads_its_stored_program_in_a_new_instance(cache_dir):
    """CachedProgram: static arguments (given or left to their defaults) and pytree inputs; a fresh instance of the
    same name loads the stored program without tracing, with the plain jit's results."""
    from sirtjax.registration.step_cache import CachedProgram
    from sirtjax.volume import make_volume

    traces = []

    def scaled(vol, factor, offset=1.0):
        traces.append(1)
        return vol.array * factor + offset, vol.spacing_mm * factor

    vol = make_volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (1.0, 2.0, 3.0), (5.0, 6.0, 7.0))
    first = CachedProgram(scaled, "scaled v1", static_argnums=(1, 2))
    out = first(vol, 2.0)
    assert len(traces) == 1 and len(_entries(cache_dir)) == 1
    fresh = CachedProgram(scaled, "scaled v1", static_argnums=(1, 2))
    again = fresh(vol, 2.0)
    assert len(traces) == 1  # loaded, not traced
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(out[0]))
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(vol.array) * 2 + 1)
    np.testing.assert_allclose(np.asarray(again[1]), [2.0, 4.0, 6.0])
    fresh(vol, 2.0, 0.0)  # another static value: another program
    assert len(traces) == 2 and len(_entries(cache_dir)) == 2


def test_steps_compile_with_the_cpu_code_generation_options():
    """The faster-compiling CPU emitters are known to this jaxlib (if an upgrade drops the option, this says so)."""
    from sirtjax.registration.optimise import step_compiler_options

    if jax.default_backend() == "cpu":
        assert step_compiler_options() == {"xla_cpu_use_fusion_emitters": False}
    step = make_step(_objective, adam_cosine(1.0, 1), "fit v4")
    assert step.compiler_options == step_compiler_options()


def test_an_unwritable_cache_folder_warns_and_the_step_still_runs(cache_dir):
    (cache_dir / _SUBFOLDER).write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="not cached"):
        params, _ = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v5"), 32)
    assert float(params["a"][0]) == pytest.approx(3.0, abs=0.3)
    assert not list(cache_dir.glob("**/*.tmp"))
