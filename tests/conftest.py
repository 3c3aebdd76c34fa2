"""Shared pytest hooks: cache folders of the session, JAX's caches freed after each test module, the peak memory and the
bad-input table reported."""

from __future__ import annotations

import ctypes
import gc
import resource
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _caches_of_the_session(tmp_path_factory):
    """The command line's compiled programs ($SIRTJAX_CACHE_DIR) in a folder of this session, not the user's; and
    JAX's persistent compilation cache switched on in ``~/.cache/sirtjax/pytest-jax``, so that a module whose
    programs were freed (below) loads the programs it shares with earlier modules, and a later run those of this
    one, instead of compiling them (its keys hold the code compiled; deleting the folder is always safe)."""
    import os

    import jax
    from jax.experimental.compilation_cache import compilation_cache

    root = tmp_path_factory.mktemp("caches")
    previous = os.environ.get("SIRTJAX_CACHE_DIR")
    os.environ["SIRTJAX_CACHE_DIR"] = str(root / "sirtjax")
    jax.config.update("jax_compilation_cache_dir", str(Path.home() / ".cache" / "sirtjax" / "pytest-jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    if previous is None:
        del os.environ["SIRTJAX_CACHE_DIR"]
    else:
        os.environ["SIRTJAX_CACHE_DIR"] = previous


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    """Drop JAX's compiled programs after each module: kept, they grew the suite's memory to 5.4 GB."""
    yield
    import jax

    jax.clear_caches()
    gc.collect()
    try:  # give freed heap pages back to the system (glibc keeps them otherwise)
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def pytest_terminal_summary(terminalreporter):
    """Print the run's peak memory and every bad-input row that ran (input, command, exit code, message)."""
    import sys

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    terminalreporter.write_line(f"peak memory (RSS) of the test process: {peak_kib / 2**20:.2f} GiB")

    module = sys.modules.get("test_bad_input") or sys.modules.get("tests.test_bad_input")
    rows = getattr(module, "ROWS", [])
    if not rows:
        return
    terminalreporter.section("bad input: one line, exit 2, nothing written")
    for what, command, code, message in rows:
        terminalreporter.write_line(f"{what:<42} | exit {code} | {command}")
        terminalreporter.write_line(f"{'':<42} |        {message}")
