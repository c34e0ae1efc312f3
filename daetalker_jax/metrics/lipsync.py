"""Lip sync of a generated video against the ground truth, from per-frame mouth-opening tracks (25 fps)."""

from __future__ import annotations

import numpy as np

MIN_PAIRS = 10  # with fewer overlapping valid frames an offset's r is too noisy to compete in the search


def _constant(x: np.ndarray) -> bool:
    """Fewer than two values, or all equal up to float rounding (frames decoded identically, read by a probe)."""
    return x.size < 2 or float(np.ptp(x)) <= 1e-9 * max(1.0, float(np.abs(x).max()))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two equal-length 1-D arrays over the pairs where neither is NaN; NaN when fewer
    than two pairs remain or either side is constant on them."""
    valid = ~(np.isnan(x) | np.isnan(y))
    x, y = x[valid], y[valid]
    if _constant(x) or _constant(y):
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    return float(np.sum(x * y) / np.sqrt(np.sum(x * x) * np.sum(y * y)))


def amplitude(generated: np.ndarray, truth: np.ndarray) -> float:
    """How far the generated mouth moves relative to the true one: std(generated) / std(truth) over the pairs
    where neither is NaN. 1 is the true range; a prediction that regresses to the mean is well under 1, a
    constant one 0. NaN when fewer than two pairs remain or the truth is constant on them."""
    valid = ~(np.isnan(generated) | np.isnan(truth))
    g, t = generated[valid], truth[valid]
    if _constant(t):
        return float("nan")
    return 0.0 if _constant(g) else float(np.std(g) / np.std(t))


def shifted_pairs(generated: np.ndarray, truth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The aligned pairs (generated[t], truth[t - k]) over the overlap of two equal-length tracks."""
    n = len(generated)
    return (generated[k:], truth[:n - k]) if k >= 0 else (generated[:n + k], truth[-k:])


def sync_scores(generated: np.ndarray, truth: np.ndarray, max_offset: int = 15) -> dict[str, float]:
    """Agreement of two mouth-opening tracks (one value per video frame; NaN where the reader failed).

    Tracks of unequal length are compared over their common prefix, and pairs with a NaN are dropped.
    `r`, `mae` (in the tracks' units) and `amplitude` (std ratio, see `amplitude`) are at offset 0.
    `best_offset` is the k in -max_offset..max_offset maximising r over (generated[t], truth[t - k]), so
    k > 0 means the generated mouth LAGS the truth by k frames (40 ms each); offsets with fewer than
    MIN_PAIRS valid pairs are skipped, ties go to the smaller |k|, and `r_best` is that r. Undefined
    values (e.g. a constant track) are NaN.
    """
    n = min(len(generated), len(truth))
    g, t = np.asarray(generated[:n], np.float64), np.asarray(truth[:n], np.float64)
    diff = np.abs(g - t)
    diff = diff[~np.isnan(diff)]
    best_offset, r_best = float("nan"), float("nan")
    for k in sorted(range(-max_offset, max_offset + 1), key=abs):
        gk, tk = shifted_pairs(g, t, k)
        if np.count_nonzero(~(np.isnan(gk) | np.isnan(tk))) < MIN_PAIRS:
            continue
        r = pearson(gk, tk)
        if r > r_best or (np.isnan(r_best) and not np.isnan(r)):
            best_offset, r_best = k, r
    return {"r": pearson(g, t), "mae": float(diff.mean()) if diff.size else float("nan"),
            "amplitude": amplitude(g, t), "best_offset": best_offset, "r_best": r_best}
