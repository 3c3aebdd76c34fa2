"""Compiled programs kept on disk as XLA executables, so a new process loads them instead of compiling.

A :class:`Program` is a function with a name that identifies its static settings, the positions of its static
arguments and its XLA options. Called plainly it is ``jax.jit`` of the function. Called with
``programs=`` a :class:`ProgramCache`, it runs the executable for these static arguments and argument shapes:
from the cache object's memory, else from its folder, else traced, compiled and stored there. A stored entry
is the serialized executable (:mod:`jax.experimental.serialize_executable`), so a later process skips
tracing, lowering and compiling alike: about 5 ms to load a program, where JAX's persistent compilation
cache still traces and lowers it first (1 s for a non-rigid step).

An entry's key is the program's name, its static arguments, the tree, shapes and dtypes of its arguments,
its XLA options and :func:`environment_digest` (sirtjax's source, the jax, jaxlib and optax versions, the
backend, the devices and, on CPU, the host's instruction-set features: an executable compiled for one CPU may
use instructions another lacks). Any change of code or machine makes new entries. An unreadable entry is
compiled again and replaced; a failed write warns and the program still runs. Entries are Python pickles of
XLA executables: the folder must be as trusted as the code (it is the user's own cache).

Loading an executable takes about 0.25 s per MB (a registration step is 1-2 MB), compiling one seconds. So that a
call does not wait for each in turn, a caller that knows what it will run announces it (:meth:`ProgramCache.expect`,
with abstract arguments where the values do not exist yet): it is then loaded, or compiled and stored, in
background threads, overlapping the work before it is needed and the other programs' compiles.

Where JAX's own persistent compilation cache is switched on in the process, a cache keeps its executables in
memory only, and says so once: an executable that JAX loads from its cache serializes without its kernels
on CPU (jaxlib 0.10: "Function ... not found" when a later process runs it).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import os
import pickle
import platform
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
from jax.experimental import serialize_executable

from sirtjax.outputs import atomic_path


def _cpu_features() -> str:
    """The host CPU's model and instruction-set flags (Linux ``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    keep = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(sorted(set(keep)))


@functools.lru_cache(maxsize=1)
def environment_digest() -> str:
    """SHA-256 of every sirtjax source file (path and content), the jax, jaxlib and optax versions, the backend,
    the devices and (on CPU) the host's instruction-set features: what an executable depends on besides its key."""
    root = Path(__file__).resolve().parent
    versions = [importlib.metadata.version(lib) for lib in ("jax", "jaxlib", "optax")]
    devices = [d.device_kind for d in jax.devices()]
    cpu = _cpu_features() if jax.default_backend() == "cpu" else ""
    h = hashlib.sha256(json.dumps([versions, jax.default_backend(), devices, cpu]).encode())
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _aval(leaf) -> tuple[tuple[int, ...], str]:
    """(shape, dtype) of an argument leaf as JAX will see it (host float64 and int64 become 32-bit)."""
    if isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct)):
        return tuple(leaf.shape), str(leaf.dtype)
    return tuple(np.shape(leaf)), str(jax.dtypes.canonicalize_dtype(np.result_type(leaf)))


def _signature(program: Program, args: tuple) -> tuple:
    """What identifies the executable of ``program`` for ``args``: its name, static arguments, tree and leaf shapes."""
    static = tuple((i, args[i]) for i in program.static_argnums if i < len(args))  # an omitted one: its default
    leaves, treedef = jax.tree.flatten([a for i, a in enumerate(args) if i not in program.static_argnums])
    return program.name, repr(static), str(treedef), tuple(_aval(x) for x in leaves)


class Program:
    """``fn`` compiled with ``static_argnums`` and XLA ``compiler_options``; ``name`` must name its static settings
    (closures that differ in anything but their arguments need different names).

    ``program(*args)`` runs ``jax.jit(fn)``; ``program(*args, programs=cache)`` the executable a
    :class:`ProgramCache` holds (or compiles and stores) for these static arguments and argument shapes.
    """

    def __init__(self, fn: Callable, name: str, static_argnums: Sequence[int] = (), compiler_options: dict | None = None):
        self.fn = fn
        self.name = name
        self.static_argnums = tuple(static_argnums)
        self.compiler_options = dict(compiler_options or {})
        self.jit = jax.jit(fn, static_argnums=self.static_argnums, compiler_options=self.compiler_options)

    def __call__(self, *args, programs: ProgramCache | None = None):
        """``fn(*args)``, through ``programs``' executable when a cache is given."""
        if programs is None:
            return self.jit(*args)
        dynamic = [a for i, a in enumerate(args) if i not in self.static_argnums]
        return programs.executable(self, args)(*dynamic)


@dataclasses.dataclass(eq=False)
class ProgramCache:
    """Executables of :class:`Program` s, kept in ``folder`` for later processes and in memory for this one.

    Pass one object to every call of a registration (and reuse it across calls and patients); a fresh object
    on the same folder is what a new process sees. ``threads``: how many programs are loaded or compiled ahead
    at once (:meth:`expect`; XLA compiles one program on about one core).
    """

    folder: Path
    threads: int = dataclasses.field(default_factory=lambda: min(2, os.cpu_count() or 1))
    _loaded: dict = dataclasses.field(default_factory=dict, init=False, repr=False)
    _said_memory_only: bool = dataclasses.field(default=False, init=False, repr=False)
    _ahead: dict[Path, Future] = dataclasses.field(default_factory=dict, init=False, repr=False)
    _pool: ThreadPoolExecutor | None = dataclasses.field(default=None, init=False, repr=False)

    def executable(self, program: Program, args: tuple) -> Callable:
        """The compiled ``program`` for ``args`` (its static ones included), loaded or compiled and stored."""
        signature = _signature(program, args)
        compiled = self._loaded.get(signature)
        if compiled is None:
            path = self._entry_path(program, signature)
            ahead = self._ahead.pop(path, None)
            compiled = self._obtain(program, args, path) if ahead is None else ahead.result()
            self._loaded[signature] = compiled
        return compiled

    def expect(self, program: Program, args: tuple) -> None:
        """Start obtaining, in a background thread, the executable that ``program(*args, programs=self)`` will run:
        loaded when stored, else compiled (and stored). Array arguments may be abstract
        (:class:`jax.ShapeDtypeStruct`). Nothing when it is in memory already or on its way."""
        signature = _signature(program, args)
        if signature in self._loaded:
            return
        path = self._entry_path(program, signature)
        if path in self._ahead:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="sirtjax-programs")
        self._ahead[path] = self._pool.submit(self._obtain, program, args, path)

    def _obtain(self, program: Program, args: tuple, path: Path):
        """The executable stored at ``path``, else ``program`` compiled for ``args`` and stored there."""
        compiled = _load(path)
        if compiled is None:
            compiled = program.jit.lower(*args).compile()
            if jax_cache_on():
                self._say_memory_only()
            else:
                self._save(path, compiled)
        return compiled

    def _entry_path(self, program: Program, signature: tuple) -> Path:
        key = json.dumps([*signature[:3], [list(a) for a in signature[3]], sorted(program.compiler_options.items()),
                          environment_digest()], default=str)
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()}.bin"

    def _say_memory_only(self) -> None:
        if not self._said_memory_only:
            self._said_memory_only = True
            warnings.warn(f"JAX's persistent compilation cache is on: compiled programs are kept in memory, not in "
                          f"{self.folder}", stacklevel=4)

    def _save(self, path: Path, compiled) -> None:
        """Write the entry atomically (a partly written file is never read); a failed write warns and leaves no file."""
        try:
            blob = pickle.dumps(serialize_executable.serialize(compiled))
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, mode=0o600) as tmp:  # the user's own cache
                tmp.write_bytes(blob)
        except (OSError, pickle.PicklingError) as exc:
            warnings.warn(f"compiled program not cached in {path.parent}: {exc}", stacklevel=4)


def jax_cache_on() -> bool:
    """Whether JAX's persistent compilation cache is switched on in this process (a folder set and not disabled)."""
    return bool(jax.config.jax_compilation_cache_dir) and bool(jax.config.jax_enable_compilation_cache)


def _load(path: Path):
    """The executable stored at path, or None when absent or unreadable."""
    try:
        payload, in_tree, out_tree = pickle.loads(path.read_bytes())
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception:  # noqa: BLE001 - absent, truncated, or from another jaxlib: any failure is a cache miss
        return None

