"""Head pose, blinks and shoulder motion for one clip: seeded smooth random processes plus movement
that follows the speech (nods on emphasis, livelier head while talking)."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from daetalker_jax.media import FPS

POSE_STD = {"yaw": 6.0, "pitch": 4.0, "roll": 2.5}       # degrees, of the idle drift
POSE_LIMIT = {"yaw": 25.0, "pitch": 15.0, "roll": 12.0}
NOD_DEG, BLINK_RATE_HZ = 4.0, 0.3
BLINK_SHAPE = np.array([0.45, 0.9, 1.0, 0.75, 0.45, 0.2, 0.05])   # fast close, slower opening


def _smooth_noise(rng: np.random.Generator, n: int, sigma_frames: float) -> np.ndarray:
    """Unit-variance low-passed Gaussian noise (variance fixed analytically, not per clip)."""
    pad = int(4 * sigma_frames)
    x = gaussian_filter1d(rng.standard_normal(n + 2 * pad), sigma_frames)[pad:pad + n]
    return x * np.sqrt(2 * np.sqrt(np.pi) * sigma_frames)


def head_motion(loud: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """yaw/pitch/roll (degrees), blink in [0, 1] and shoulder offset (head units) per frame.

    `loud` is the per-frame loudness in [0, 1]; emphasis = its prominent peaks, each giving a short
    downward nod; while talking the head moves a little more.
    """
    n = len(loud)
    talk = gaussian_filter1d(loud.astype(np.float64), 6)
    out = {}
    for name, std in POSE_STD.items():
        drift = std * _smooth_noise(rng, n, sigma_frames=15)
        lively = 0.6 * std * talk * _smooth_noise(rng, n, sigma_frames=5)
        out[name] = drift + lively
    peaks, props = find_peaks(gaussian_filter1d(loud.astype(np.float64), 1.5), prominence=0.25, distance=8)
    t = np.arange(n)
    for p, prom in zip(peaks, props["prominences"]):
        out["pitch"] -= NOD_DEG * prom * np.exp(-0.5 * ((t - p - 2) / 3.0) ** 2)   # chin dips after the accent
    for name, lim in POSE_LIMIT.items():
        out[name] = np.clip(out[name], -lim, lim)

    blink = np.zeros(n)
    k = int(rng.integers(5, 40))
    while k < n:
        seg = BLINK_SHAPE[: n - k]
        blink[k:k + len(seg)] = np.maximum(blink[k:k + len(seg)], seg)
        k += len(BLINK_SHAPE) + int(rng.exponential(FPS / BLINK_RATE_HZ))
    breath = np.sin(2 * np.pi * t / (4.0 * FPS) + rng.uniform(0, 2 * np.pi))
    out["shoulder_x"] = 0.004 * out["yaw"] + 0.01 * _smooth_noise(rng, n, 25)
    out["shoulder_y"] = 0.012 * breath
    out["blink"] = blink
    return {k: v.astype(np.float32) for k, v in out.items()}
