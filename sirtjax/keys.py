"""PRNG keys made and split without a program compiled in every new process.

``jax.random.key`` and ``jax.random.split`` called outside a program compile small XLA programs of their own
(threefry's seeding and splitting: about 0.1 s in each new process). :func:`key` builds the key from its two
32-bit words, and :func:`split` runs the split as a :class:`~sirtjax.programs.Program` that a
:class:`~sirtjax.programs.ProgramCache` keeps: the same keys, loaded instead of compiled.
"""

from __future__ import annotations

import jax
import numpy as np

from sirtjax.programs import Program, ProgramCache


def key(seed: int) -> jax.Array:
    """``jax.random.key(seed)``; for JAX's default threefry keys and seeds in [0, 2**31), built from the key's
    words (0, seed) without compiling."""
    seed = int(seed)
    if jax.config.jax_default_prng_impl != "threefry2x32" or not 0 <= seed < 2**31:
        return jax.random.key(seed)
    return jax.random.wrap_key_data(np.array([0, seed], np.uint32))


def _split_keys(k: jax.Array, num: int) -> tuple[jax.Array, ...]:
    return tuple(jax.random.split(k, num))


_split = Program(_split_keys, "split key", static_argnums=(1,))


def split(k: jax.Array, programs: ProgramCache | None = None, num: int = 2) -> tuple[jax.Array, ...]:
    """``jax.random.split(k, num)`` as a tuple of keys, through ``programs``' executable when given."""
    return _split(k, num, programs=programs)


_fold_in = Program(jax.random.fold_in, "fold in")


def fold_in(k: jax.Array, data: int, programs: ProgramCache | None = None) -> jax.Array:
    """``jax.random.fold_in(k, data)``, through ``programs``' executable when given."""
    return _fold_in(k, np.uint32(data), programs=programs)
