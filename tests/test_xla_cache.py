"""The commands' persistent compilation cache: where it goes, and that it can be turned off."""

from __future__ import annotations

import jax
import pytest

from daetalker_jax import xla_cache


@pytest.fixture
def restore_jax_cache_config():
    saved = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    yield
    jax.config.update("jax_compilation_cache_dir", saved[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", saved[1])


@pytest.mark.parametrize("jax_var, ours, expected", [
    ("/x/jax", "/x/ours", "/x/jax"),          # JAX's own variable wins
    (None, "/x/ours", "/x/ours"),
    (None, None, str(xla_cache.DEFAULT)),
    (None, "off", None),
])
def test_cache_location(monkeypatch, restore_jax_cache_config, jax_var, ours, expected):
    for name, value in (("JAX_COMPILATION_CACHE_DIR", jax_var), ("DAETALKER_XLA_CACHE", ours)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    before = jax.config.jax_compilation_cache_dir
    assert xla_cache.enable_compilation_cache() == expected
    if expected is None:
        assert jax.config.jax_compilation_cache_dir == before   # untouched
    else:
        assert jax.config.jax_compilation_cache_dir == expected
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
