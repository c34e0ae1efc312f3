"""Shared by the bench scripts: wall seconds per call of a jitted function."""

from __future__ import annotations

import time

import jax


def seconds_per_call(fn, *args, iters: int) -> float:
    """One warm-up call, then the mean over `iters` calls, waiting for the device at both ends only (so
    dispatch overlaps with the previous call, as in a real loop)."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(iters):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / iters
