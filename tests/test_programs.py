"""Compiled programs kept on disk (ProgramCache): a fresh cache object loads them without tracing or compiling,
with the same results."""

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sirtjax.programs import Program, ProgramCache
from sirtjax.registration.optimise import Convergence, make_step, run_level
from sirtjax.registration.optimisers import LevelOptimiser, adam_cosine

TRACES = []


def _objective(params, data, weights, key):
    """A least-squares fit with a random weight per point: exercises params, data and the PRNG key."""
    TRACES.append(1)  # runs only while JAX traces
    w = jax.random.uniform(key, data["x"].shape)
    r = params["a"] * data["x"] + params["b"] - data["y"]
    loss = jnp.mean(w * r * r)
    return loss, {"fit": loss, "scale": weights}


def _run(step, n_points: int, programs: ProgramCache | None, seed: int = 0):
    x = jnp.linspace(-1.0, 1.0, n_points)[None]
    data = {"x": x, "y": 3.0 * x - 0.5}
    params = {"a": jnp.zeros((1,)), "b": jnp.zeros((1,))}
    return run_level(step, params, LevelOptimiser("adam", 0.3, 60), data, jnp.ones((1,)), jax.random.key(seed),
                     Convergence(60, min_iterations=60), programs=programs)


@pytest.fixture(autouse=True)
def _without_jax_persistent_cache():
    """JAX's persistent compilation cache off (the session switches it on; a ProgramCache then keeps its programs in
    memory only), as in a ``sirtjax`` command."""
    from jax.experimental.compilation_cache import compilation_cache

    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


def _entries(folder):
    return sorted(folder.glob("*.bin"))


class _Compiles:
    """Counts XLA backend compiles while active."""

    def __init__(self):
        self.n = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, name, *args, **kwargs):
        if name == "/jax/core/compile/backend_compile_duration":
            self.n += 1


COMPILES = _Compiles()


def test_a_fresh_cache_loads_the_stored_step_without_tracing_or_compiling(tmp_path):
    step = make_step(_objective, adam_cosine(1.0, 1), "fit v1")
    params, log = _run(step, 64, ProgramCache(tmp_path))
    assert len(_entries(tmp_path)) == 2  # the step and the optimiser's init
    traces, compiles = len(TRACES), COMPILES.n
    # as a new process would: a new step object and a cache object that has nothing in memory
    params2, log2 = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v1"), 64, ProgramCache(tmp_path))
    assert len(TRACES) == traces and COMPILES.n == compiles
    np.testing.assert_array_equal(log2.loss_history, log.loss_history)
    jax.tree.map(np.testing.assert_array_equal, params2, params)
    assert set(log2.last_terms) == {"fit", "scale", "loss"}
    assert float(params2["a"][0]) == pytest.approx(3.0, abs=0.3)


def test_the_stored_executable_matches_the_plain_jit(tmp_path):
    plain, log_plain = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v2"), 48, None, seed=3)
    assert not tmp_path.exists() or not _entries(tmp_path)
    stored, log_stored = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v2"), 48, ProgramCache(tmp_path), seed=3)
    np.testing.assert_allclose(log_stored.loss_history, log_plain.loss_history, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), stored, plain)


def test_new_shapes_and_names_get_their_own_entries_and_a_broken_entry_is_replaced(tmp_path):
    cache = ProgramCache(tmp_path)
    _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3"), 32, cache)
    _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3"), 40, cache)
    _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3 other settings"), 32, cache)
    entries = _entries(tmp_path)
    assert len(entries) == 3 + 1  # three steps, one optimiser init (the params' shapes are the same)
    for e in entries:
        e.write_bytes(e.read_bytes()[:50])  # truncated
    before = len(TRACES)
    params, _ = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v3"), 32, ProgramCache(tmp_path))
    assert len(TRACES) == before + 1  # traced and compiled again
    assert float(params["a"][0]) == pytest.approx(3.0, abs=0.3)
    assert max(e.stat().st_size for e in _entries(tmp_path)) > 1000


@pytest.mark.slow  # 20 s; the default run loads a level step and a segmentation forward pass in a fresh cache
def test_registration_round_trips_through_the_cache(tmp_path, monkeypatch):
    """The real programs (LevelData pytrees, PRNG keys, static arguments): compiled and stored once, then loaded
    by a fresh cache object with equal results and no compile at all."""
    from sirtjax.registration import NonrigidStage, RegistrationConfig, register
    from sirtjax import programs as programs_module
    from sirtjax.registration.config import AffineStage, Pyramid, Regulariser
    from sirtjax.volume import make_volume, world_grid

    fixed = make_volume(np.zeros((12, 14, 16), np.float32), (4.0, 3.5, 5.0), (-30.0, -25.0, -30.0))
    p = np.asarray(world_grid(fixed))
    liver = np.linalg.norm((p - [4.0, 0.0, 2.0]) / [14.0, 11.0, 12.0], axis=-1) < 1
    img = (50.0 * (np.linalg.norm(p / [28.0, 22.0, 26.0], axis=-1) < 1) + 60.0 * liver).astype(np.float32)
    moving = make_volume(np.roll(img, 1, axis=2), (4.0, 3.5, 5.0), (-30.0, -25.0, -30.0))
    masks = dict(fixed_mask=fixed.with_array(liver.astype(np.uint8)), moving_mask=moving.with_array(np.roll(liver, 1, 2).astype(np.uint8)))
    config = RegistrationConfig(pyramid=Pyramid(levels=2, finest_mm=None), regulariser=Regulariser(neighbourhood=6),
                                affine=AffineStage(on="segmentation", iterations=20, candidates=1),
                                stages=(NonrigidStage(iterations=20),))

    empty = ProgramCache(tmp_path)
    first = register(fixed.with_array(img), moving, config=config, programs=empty, **masks)
    assert not empty._ahead  # the level programs compiled ahead were the ones the levels ran
    n = len(_entries(tmp_path))
    assert n >= 4 + 2  # two levels, two stages; pyramids, the final warp
    compiles = COMPILES.n
    fresh, threads, load = ProgramCache(tmp_path), [], programs_module._load
    monkeypatch.setattr(programs_module, "_load", lambda path: threads.append(threading.current_thread().name) or load(path))
    second = register(fixed.with_array(img), moving, config=config, programs=fresh, **masks)
    assert COMPILES.n == compiles and len(_entries(tmp_path)) == n
    # the level programs (4 steps, their optimisers' inits), announced with abstract arguments, loaded in the
    # background, and each was the one its level then ran
    assert sum(t.startswith("sirtjax-programs") for t in threads) >= 6 and not fresh._ahead and len(threads) == n
    np.testing.assert_array_equal(second.displacement.array, first.displacement.array)
    assert float(np.abs(first.displacement.array).max()) > 1.0  # it did move (a one-voxel shift)


def test_a_program_with_static_arguments_and_pytrees_loads_in_a_fresh_cache(tmp_path):
    """Static arguments (given or left to their defaults) and pytree inputs: a fresh cache loads the stored
    executable without tracing, with the plain jit's results; another static value is another program."""
    from sirtjax.volume import make_volume

    traces = []

    def scaled(vol, factor, offset=1.0):
        traces.append(1)
        return vol.array * factor + offset, vol.spacing_mm * factor

    vol = make_volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (1.0, 2.0, 3.0), (5.0, 6.0, 7.0))
    program = Program(scaled, "scaled v1", static_argnums=(1, 2))
    out = program(vol, 2.0, programs=ProgramCache(tmp_path))
    assert len(traces) == 1 and len(_entries(tmp_path)) == 1
    again = Program(scaled, "scaled v1", static_argnums=(1, 2))(vol, 2.0, programs=ProgramCache(tmp_path))
    assert len(traces) == 1  # loaded, not traced
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(out[0]))
    np.testing.assert_array_equal(np.asarray(again[0]), np.asarray(vol.array) * 2 + 1)
    np.testing.assert_allclose(np.asarray(again[1]), [2.0, 4.0, 6.0])
    Program(scaled, "scaled v1", static_argnums=(1, 2))(vol, 2.0, 0.0, programs=ProgramCache(tmp_path))
    assert len(traces) == 2 and len(_entries(tmp_path)) == 2


def test_the_key_changes_with_the_environment(tmp_path, monkeypatch):
    """Another sirtjax source, jax version or CPU gives another entry (an executable may not run elsewhere)."""
    from sirtjax import programs as programs_module

    program = Program(lambda x: x + 1, "plus one")
    program(jnp.zeros(3), programs=ProgramCache(tmp_path))
    monkeypatch.setattr(programs_module, "environment_digest", lambda: "another machine")
    program(jnp.zeros(3), programs=ProgramCache(tmp_path))
    assert len(_entries(tmp_path)) == 2


def test_with_jax_persistent_cache_on_programs_stay_in_memory_and_it_says_so(tmp_path):
    """An executable that JAX loaded from its own cache cannot be stored again (its CPU kernels are left out):
    with that cache on, nothing is written, once said."""
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "jax"))
    compilation_cache.reset_cache()
    cache = ProgramCache(tmp_path / "programs")
    with pytest.warns(UserWarning, match="kept in memory"):
        _run(make_step(_objective, adam_cosine(1.0, 1), "fit v6"), 32, cache)
    assert not (tmp_path / "programs").exists()
    before = len(TRACES)
    params, _ = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v6"), 32, cache)
    assert len(TRACES) == before  # the same cache object still holds it
    assert float(params["a"][0]) == pytest.approx(3.0, abs=0.3)


def test_steps_compile_with_the_cpu_code_generation_options():
    """The faster-compiling CPU emitters are known to this jaxlib (if an upgrade drops the option, this says so)."""
    from sirtjax.registration.optimise import step_compiler_options

    if jax.default_backend() == "cpu":
        assert step_compiler_options() == {"xla_cpu_use_fusion_emitters": False}
    step = make_step(_objective, adam_cosine(1.0, 1), "fit v4")
    assert step.compiler_options == step_compiler_options()


def test_an_unwritable_cache_folder_warns_and_the_step_still_runs(tmp_path):
    folder = tmp_path / "programs"
    folder.write_text("a file where the folder should be")
    with pytest.warns(UserWarning, match="not cached"):
        params, _ = _run(make_step(_objective, adam_cosine(1.0, 1), "fit v5"), 32, ProgramCache(folder))
    assert float(params["a"][0]) == pytest.approx(3.0, abs=0.3)
    assert not list(tmp_path.glob("**/*.tmp"))


def test_a_segmentation_forward_pass_loads_in_a_fresh_cache_and_matches_the_jit(tmp_path):
    """A U-Net's forward pass through a ProgramCache: stored once, then loaded by a fresh cache object (a new
    process) without compiling, named by the model's structure, with the probabilities of the plain jit path."""
    from flax import nnx

    from sirtjax.models.store import build_model, load_param_arrays
    from sirtjax.segmentation.infer import forward_program, predict_array

    def model_of(spec):  # random weights without the initialisers' compiles (seconds each)
        model = nnx.eval_shape(lambda: build_model(spec, rngs=nnx.Rngs(params=0)))
        rng = np.random.default_rng(3)
        load_param_arrays(model, {"/".join(map(str, p)): rng.normal(0.0, 0.3, v.get_value().shape)
                                  for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))})
        return model

    spec = {"arch": "residual_unet3d", "features": [2, 2], "dropout_rate": 0.0}
    model = model_of(spec)
    image = np.random.default_rng(0).normal(size=(10, 12, 14)).astype(np.float32)
    plain = predict_array(model, image, max_out_tile=(8, 8, 8))
    first = predict_array(model, image, max_out_tile=(8, 8, 8), programs=ProgramCache(tmp_path))
    assert len(_entries(tmp_path)) == 1
    compiles = COMPILES.n
    again = predict_array(model, image, max_out_tile=(8, 8, 8), programs=ProgramCache(tmp_path))
    assert COMPILES.n == compiles and len(_entries(tmp_path)) == 1
    np.testing.assert_allclose(first, plain, atol=1e-6)
    np.testing.assert_array_equal(again, first)
    other = model_of({**spec, "dropout_rate": 0.2})  # another setting: another program
    assert forward_program(nnx.graphdef(other), ()).name != forward_program(nnx.graphdef(model), ()).name
    assert forward_program(nnx.graphdef(model), (2,)).name != forward_program(nnx.graphdef(model), ()).name


def test_the_regseg_network_is_expected_ahead_stored_and_loaded_by_a_later_process(tmp_path):
    """The registration-segmentation network through a ProgramCache: announced ahead from abstract arguments
    (expect_network), stored once, loaded by a fresh cache object without compiling, with the plain jit's fields."""
    from flax import nnx

    from sirtjax.models.regseg import RegSegNet
    from sirtjax.registration.warp import AffineTransform
    from sirtjax.segmentation.regseg import expect_network, network_fields, network_pair
    from sirtjax.volume import make_volume

    model = RegSegNet((4, 8), 2, rngs=nnx.Rngs(params=4))
    for net in model.cascades:  # a non-zero field
        net.head.kernel.set_value(jax.random.normal(jax.random.key(6), net.head.kernel.get_value().shape) * 0.05)
    spec = {"spacing_mm": [4.0, 4.0, 4.0], "grid_zyx": [16, 16, 16]}
    zz, yy, xx = np.indices((16, 18, 20))
    liver = ((zz - 8) ** 2 + (yy - 9) ** 2 + (xx - 10) ** 2 < 25).astype(np.uint8)
    ct = make_volume((-800.0 + 850.0 * (zz > 1) + 60.0 * liver).astype(np.float32), (5.0, 5.0, 5.0), (-50.0, -45.0, -40.0))
    affine = AffineTransform(np.eye(3, dtype=np.float32), np.array([2.0, 0.0, -3.0], np.float32), np.zeros(3, np.float32))
    pair = network_pair(ct, ct, ct.with_array(liver), affine, spec["spacing_mm"], spec["grid_zyx"])
    plain = network_fields(model, spec["spacing_mm"], [pair])
    cache = ProgramCache(tmp_path)
    expect_network(model, spec, 1, cache)
    first = network_fields(model, spec["spacing_mm"], [pair], cache)
    assert len(_entries(tmp_path)) == 1
    compiles = COMPILES.n
    again = network_fields(model, spec["spacing_mm"], [pair], ProgramCache(tmp_path))
    assert COMPILES.n == compiles and len(_entries(tmp_path)) == 1
    assert float(np.abs(plain).max()) > 0.01
    np.testing.assert_allclose(first, plain, atol=1e-5)
    np.testing.assert_array_equal(again, first)


def test_an_expected_program_is_loaded_or_compiled_ahead_from_abstract_arguments(tmp_path, monkeypatch):
    """expect() with abstract arguments (shapes only) starts obtaining the executable a later call runs, in a
    background thread: loaded when stored, else compiled and stored. The call takes it (the same results, nothing
    loaded or compiled twice); a program in memory already is not obtained again."""
    from sirtjax import programs as programs_module

    program = Program(lambda x, k: x * k + 1, "expected v1", static_argnums=(1,))
    x, y = jnp.arange(4.0), jnp.arange(5.0)
    stored = program(x, 3, programs=ProgramCache(tmp_path))
    loads, load, where = [], programs_module._load, []
    monkeypatch.setattr(programs_module, "_load", lambda path: loads.append(path.name) or load(path))
    fresh = ProgramCache(tmp_path)
    fresh.expect(program, (jax.ShapeDtypeStruct((4,), jnp.float32), 3))
    fresh.expect(program, (jax.ShapeDtypeStruct((5,), jnp.float32), 3))  # not stored: compiled ahead, then stored
    assert len(fresh._ahead) == 2
    compiles = _Compiles()
    np.testing.assert_array_equal(np.asarray(program(x, 3, programs=fresh)), np.asarray(stored))
    np.testing.assert_array_equal(np.asarray(program(y, 3, programs=fresh)), np.arange(5.0) * 3 + 1)
    assert compiles.n <= 1 and len(loads) == 2 and not fresh._ahead and len(_entries(tmp_path)) == 2
    monkeypatch.setattr(ProgramCache, "_obtain", lambda *a: where.append(a))
    fresh.expect(program, (x, 3))  # in memory already
    assert not fresh._ahead and not where


def test_the_jacobian_checks_are_expected_ahead_for_the_fixed_grid(tmp_path):
    """expect_checks compiles, from the fixed image alone, the program jacobian_checks then runs on a field on its grid:
    no compile when the checks run, one stored entry."""
    from sirtjax.registration.guided import expect_checks, jacobian_checks
    from sirtjax.volume import make_volume

    field = make_volume(np.random.default_rng(1).normal(size=(19, 23, 29, 3)).astype(np.float32) * 0.2, (1.5, 1.2, 2.0))
    cache = ProgramCache(tmp_path)
    expect_checks(field.with_array(np.zeros(field.shape, np.float32)), cache)
    next(iter(cache._ahead.values())).result()  # compiled (and stored) in the background
    compiles = COMPILES.n
    whole, in_liver = jacobian_checks(field, np.ones(field.shape, bool), cache)
    assert COMPILES.n == compiles and len(_entries(tmp_path)) == 1
    assert whole == in_liver and whole["n_voxels"] == 19 * 23 * 29
