"""sirtjax.keys: the same keys as jax.random's, made and split without per-process compiles."""

import jax
import numpy as np
import pytest

from sirtjax import keys
from sirtjax.programs import ProgramCache


@pytest.mark.parametrize("seed", [0, 1, 7, 123456789, 2**31 - 1, 2**31, 2**40])
def test_key_is_jax_random_key(seed):
    np.testing.assert_array_equal(jax.random.key_data(keys.key(seed)), jax.random.key_data(jax.random.key(seed)))


def test_split_and_fold_in_are_jax_random_s_with_and_without_a_program_cache(tmp_path):
    k = jax.random.key(42)
    want = jax.random.key_data(jax.random.split(k))
    for programs in (None, ProgramCache(tmp_path), ProgramCache(tmp_path)):  # jitted; compiled; the second cache object loads it (or, under JAX's own cache, compiles it again)
        first, second = keys.split(k, programs)
        np.testing.assert_array_equal(jax.random.key_data(first), want[0])
        np.testing.assert_array_equal(jax.random.key_data(second), want[1])
        np.testing.assert_array_equal(jax.random.key_data(keys.fold_in(k, 5, programs)),
                                      jax.random.key_data(jax.random.fold_in(k, 5)))
