"""The evaluation's CPU work on pixels, spread over worker processes: frame fidelity and stability per clip
(`pixel_scores`; float64 SSIM costs ~0.6 s for a 75-frame 128 px clip on one core) next to the mouth/pose
reader.

Workers are spawned, not forked (the parent holds the GPU), and import only NumPy/SciPy and this package's
light modules; `worker_pool` starts them at once so that their start overlaps the GPU work before them.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager

import numpy as np

from daetalker_jax.metrics.fidelity import psnr, ssim
from daetalker_jax.metrics.stability import stability


def _started() -> bool:
    import daetalker_jax.synth.measure  # noqa: F401  (the reader's module, imported while the GPU works)

    return True


@contextmanager
def worker_pool(workers: int) -> Iterator[Executor | None]:
    """`workers` spawned processes, started now; None (run in this process) for workers <= 1."""
    if workers <= 1:
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for _ in range(workers):   # one task each: a spawn pool starts a process per waiting task
            pool.submit(_started)
        yield pool


def map_in(pool: Executor | None, fn: Callable, *iterables: Iterable) -> list:
    """`fn` over the iterables, in `pool` (in order) or in this process."""
    return list(pool.map(fn, *iterables) if pool is not None else map(fn, *iterables))


def pixel_scores(generated: np.ndarray, real: np.ndarray, inverted: np.ndarray, shared: np.ndarray,
                 picks: np.ndarray) -> dict[str, float]:
    """A clip's fidelity (generated vs real frames; the DiffAE's reconstructions, from the inverted and from the
    shared x_T, vs the real frames `picks`) and temporal stability."""
    scores = {"frames": float(len(real)), "psnr": psnr(generated, real), "ssim": ssim(generated, real),
              "recon/psnr_inverted": psnr(inverted, real[picks]), "recon/ssim_inverted": ssim(inverted, real[picks]),
              "recon/psnr_shared_xT": psnr(shared, real[picks]), "recon/ssim_shared_xT": ssim(shared, real[picks])}
    scores.update({f"stability/{k}": v for k, v in stability(generated, real).items()})
    return scores
