"""Temporal stability of a generated video: background flicker and whole-frame jitter against the truth."""

from __future__ import annotations

import numpy as np

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601


def luma(frames: np.ndarray) -> np.ndarray:
    """uint8 RGB (n, H, W, 3) -> float64 luma (n, H, W) in 0..255."""
    return frames.astype(np.float64) @ LUMA_WEIGHTS


def ratio(generated: float, truth: float) -> float:
    """generated / truth of two non-negative amounts, with a zero truth giving inf (generated > 0) or 1.0
    (both zero): against a still reference any motion is infinitely worse, and matching stillness is a
    perfect match. NaN in gives NaN out."""
    if truth == 0:
        return 1.0 if generated == 0 else float("inf") if generated > 0 else float("nan")
    return float(generated / truth)


def background_mask(truth_frames: np.ndarray, threshold: float = 2.0) -> np.ndarray:
    """bool (H, W): the static background, pixels whose luma std over time in the truth is < threshold."""
    return luma(truth_frames).std(axis=0) < threshold


def flicker(frames: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute frame-to-frame luma change (0..255 per frame) over the masked pixels; NaN when the
    mask is empty or there are fewer than two frames."""
    steps = np.abs(np.diff(luma(frames), axis=0))[:, mask]
    return float(steps.mean()) if steps.size else float("nan")


def jitter(frames: np.ndarray) -> float:
    """Mean absolute frame-to-frame luma change (0..255 per frame) over the whole frame."""
    return flicker(frames, np.ones(frames.shape[1:3], bool))


def stability(generated: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Flicker (on the truth's static background) and jitter of both videos, and generated/truth ratios
    (see `ratio` for a zero truth). Frame sizes must match; frame counts use the common prefix."""
    if generated.shape[1:3] != truth.shape[1:3]:
        raise ValueError(f"frame sizes differ: generated {generated.shape[1:3]}, truth {truth.shape[1:3]}")
    n = min(len(generated), len(truth))
    generated, truth = generated[:n], truth[:n]
    mask = background_mask(truth)
    out = {"flicker": flicker(generated, mask), "flicker_truth": flicker(truth, mask),
           "jitter": jitter(generated), "jitter_truth": jitter(truth)}
    out["flicker_ratio"] = ratio(out["flicker"], out["flicker_truth"])
    out["jitter_ratio"] = ratio(out["jitter"], out["jitter_truth"])
    return out
