"""Optimisation steps kept on disk as exported programs, so a new process need not trace them again.

JAX's persistent compilation cache (the CLI turns it on) keeps compiled executables, but each new
process still traces and lowers every step in Python first: about 1 s per non-rigid level and
0.3 s per affine level, more than the optimisation itself on a warm cache. When a cache folder is
set (``jax_compilation_cache_dir``), :class:`CachedStep` also stores each step as an exported
program (``jax.export``, StableHLO) in its ``sirtjax-steps`` subfolder. The key is the step's name
(its static settings), the shapes and dtypes of the arguments, the jax version, the backend and a
digest of sirtjax's source and of the versions of the libraries traced into the steps, so any code
change makes new entries. A later process deserialises the
program instead of tracing it, and its executable comes from the persistent cache. Without a cache
folder a CachedStep is the plain jit-compiled step. An unreadable entry is exported again and replaced.

A step maps ``(params, opt_state, *rest) -> (params, opt_state, terms)`` with ``terms`` a dict of
arrays (:func:`sirtjax.registration.optimise.make_step`); the cache relies on that shape of output.
:class:`CachedProgram` keeps the helpers around the steps (pyramid smoothing, field upsampling, the
final warp) the same way; a warm ``sirtjax register`` call traced about 14 such programs before.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import export

_SUBFOLDER = "sirtjax-steps"


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of every sirtjax source file (path and content) and of the jax, jaxlib and optax versions:
    the code a step is traced from; a change gives new keys."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(json.dumps([importlib.metadata.version(lib) for lib in ("jax", "jaxlib", "optax")]).encode())
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _entry_path(name: str, signature) -> Path:
    """The cache file of a program: its name and argument signature, the backend and :func:`code_digest`."""
    key = hashlib.sha256(json.dumps([name, str(signature), jax.default_backend(), code_digest()]).encode())
    return Path(jax.config.jax_compilation_cache_dir) / _SUBFOLDER / f"{key.hexdigest()}.bin"


def _is_key(leaf) -> bool:
    return jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)


class CachedStep:
    """The step ``fn`` jit-compiled with XLA ``compiler_options``, its traced programs also kept on disk
    (see module docstring); a loaded program is compiled with the same options."""

    def __init__(self, fn: Callable, name: str, compiler_options: dict | None = None):
        self.name = name
        self.compiler_options = compiler_options or {}
        self.fn = fn  # the step itself, not jit-compiled
        self._jit = jax.jit(fn, compiler_options=self.compiler_options)
        self._programs: dict = {}

    def __call__(self, params, opt_state, *rest):
        """``fn(params, opt_state, *rest)``, through the stored program of these shapes when there is one."""
        args = (params, opt_state, *rest)
        if not jax.config.jax_compilation_cache_dir:
            return self._jit(*args)
        leaves, treedef = jax.tree.flatten(args)
        signature = (treedef, tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves))
        program = self._programs.get(signature)
        if program is None:
            program = self._programs[signature] = self._program(params, opt_state, leaves, signature)
        return program(leaves)

    def _program(self, params, opt_state, leaves, signature) -> Callable:
        """The step of these argument shapes as a function of the flat leaves, loaded or exported."""
        path = _entry_path(self.name, signature)
        impls = [jax.random.key_impl(leaf) if _is_key(leaf) else None for leaf in leaves]
        exported, names = _load(path)
        if exported is None:
            exported, names = self._export(leaves, signature[0], impls)
            _save(path, exported, names)
        params_def, state_def = jax.tree.structure(params), jax.tree.structure(opt_state)
        n_p, n_s = params_def.num_leaves, state_def.num_leaves

        @functools.partial(jax.jit, compiler_options=self.compiler_options)
        def run(flat):
            return exported.call(*[jax.random.key_data(x) if impl else x for x, impl in zip(flat, impls)])

        device = jax.devices()[0]

        def call(flat):
            if not all(getattr(x, "committed", False) for x in flat):
                # the step's outputs are committed to the device; commit fresh inputs too, or the second
                # call would lower (and compile) the program again for the other placement
                flat = jax.device_put(flat, device)
            out = run(flat)
            return (jax.tree.unflatten(params_def, out[:n_p]), jax.tree.unflatten(state_def, out[n_p:n_p + n_s]),
                    dict(zip(names, out[n_p + n_s:])))

        return call

    def _export(self, leaves, treedef, impls):
        """The step exported over flat arguments (keys as raw key data; ``impls`` their PRNG implementations)
        and flat outputs, and its term names."""
        names: list[str] = []

        def flat_step(*raw):
            flat = [jax.random.wrap_key_data(x, impl=impl) if impl else x for x, impl in zip(raw, impls)]
            params, opt_state, terms = self.fn(*jax.tree.unflatten(treedef, flat))
            names.extend(sorted(terms))
            return [*jax.tree.leaves(params), *jax.tree.leaves(opt_state), *(terms[n] for n in sorted(terms))]

        raw = [jax.random.key_data(x) if impl else x for x, impl in zip(leaves, impls)]
        return export.export(jax.jit(flat_step))(*raw), names


class CachedProgram:
    """``fn`` jit-compiled with ``static_argnums``; with a cache folder set, each traced program is also kept on disk
    (as :class:`CachedStep`'s are), so a new process loads it instead of tracing and lowering ``fn`` again.

    For the helpers around the steps (pyramid smoothing, field upsampling, the final warp): array arguments or
    registered pytrees of arrays (no PRNG keys), outputs an array or a tuple, list or dict of arrays.
    """

    def __init__(self, fn: Callable, name: str, static_argnums: tuple[int, ...] = ()):
        self.name = name
        self.fn = fn
        self.static_argnums = static_argnums
        self._jit = jax.jit(fn, static_argnums=static_argnums)
        self._programs: dict = {}

    def __call__(self, *args):
        """``fn(*args)``, through the stored program of these static arguments and shapes when there is one."""
        if not jax.config.jax_compilation_cache_dir:
            return self._jit(*args)
        static = tuple((i, args[i]) for i in self.static_argnums if i < len(args))  # an omitted one: its default
        leaves, treedef = jax.tree.flatten([a for i, a in enumerate(args) if i not in self.static_argnums])
        signature = (static, treedef, tuple((np.shape(x), str(jax.dtypes.canonicalize_dtype(np.result_type(x)))) for x in leaves))
        program = self._programs.get(signature)
        if program is None:
            program = self._programs[signature] = self._program(signature)
        return program(*jax.device_put(leaves, jax.devices()[0]))  # committed, as the steps' outputs: one placement

    def _program(self, signature) -> Callable:
        static, treedef, _ = signature
        path = _entry_path(self.name, signature)
        exported, _ = _load(path)
        if exported is None:
            def flat_fn(*leaves):
                dynamic, fixed = list(jax.tree.unflatten(treedef, leaves)), dict(static)
                return self.fn(*[fixed[i] if i in fixed else dynamic.pop(0) for i in range(len(fixed) + len(dynamic))])

            shapes = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in signature[2]]
            exported = export.export(jax.jit(flat_fn))(*shapes)
            _save(path, exported, [])
        return jax.jit(exported.call)


def _load(path: Path):
    """(Exported, term names) stored at path, or (None, None) when absent or unreadable."""
    try:
        blob = path.read_bytes()
        size = int.from_bytes(blob[:4], "little")
        names = json.loads(blob[4:4 + size])
        return export.deserialize(bytearray(blob[4 + size:])), names
    except Exception:  # noqa: BLE001 - absent, truncated, or from another jax: any failure is a cache miss
        return None, None


def _save(path: Path, exported, names: list[str]) -> None:
    """Write the entry atomically (a partly written file is never read); a failed write warns and leaves no file."""
    head = json.dumps(names).encode()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(len(head).to_bytes(4, "little") + head + bytes(exported.serialize()))
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        warnings.warn(f"registration step not cached in {path.parent}: {exc}", stacklevel=3)
