"""Parallel map over independent jobs (clips) in spawned worker processes, or in-process for one worker."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

J = TypeVar("J")
R = TypeVar("R")


def imap_unordered(fn: Callable[[J], R], jobs: Sequence[J], workers: int) -> Iterator[R]:
    """Yields fn(job) for every job as results finish. `fn` must be a module-level function."""
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            yield from pool.imap_unordered(fn, jobs)
    else:
        yield from map(fn, jobs)
