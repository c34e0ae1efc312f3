"""Head pose of a generated video: error against the requested pose, and how lively the motion is
compared with the truth. Poses are (n, 3) arrays of (yaw, pitch, roll) in degrees, one row per frame,
with NaN rows where the estimator failed."""

from __future__ import annotations

import numpy as np

from daetalker_jax.metrics.lipsync import pearson
from daetalker_jax.metrics.stability import ratio

ANGLES = ("yaw", "pitch", "roll")
AUTOCORR_LAGS = (1, 5)


def pose_error(generated: np.ndarray, requested: np.ndarray) -> dict[str, float]:
    """Median and mean absolute error per angle (deg) over the common prefix, skipping rows with a NaN."""
    n = min(len(generated), len(requested))
    err = np.abs(np.asarray(generated[:n], np.float64) - np.asarray(requested[:n], np.float64))
    err = err[~np.isnan(err).any(axis=1)]
    out = {}
    for i, angle in enumerate(ANGLES):
        empty = len(err) == 0
        out[f"{angle}_median_abs_deg"] = float("nan") if empty else float(np.median(err[:, i]))
        out[f"{angle}_mean_abs_deg"] = float("nan") if empty else float(err[:, i].mean())
    return out


def motion_stats(pose: np.ndarray) -> dict[str, float]:
    """Per angle: mean speed (mean |frame-to-frame change|, deg per frame), range (95th - 5th percentile,
    deg) and the lag-1 / lag-5 autocorrelation (Pearson r of the angle against itself shifted), all
    ignoring NaN frames (and the steps touching them). NaN where undefined, e.g. the autocorrelation of a
    constant angle."""
    pose = np.asarray(pose, np.float64)
    out = {}
    for i, angle in enumerate(ANGLES):
        x = pose[:, i]
        steps = np.abs(np.diff(x))
        steps, values = steps[~np.isnan(steps)], x[~np.isnan(x)]
        out[f"{angle}_speed_deg_per_frame"] = float(steps.mean()) if steps.size else float("nan")
        out[f"{angle}_range_deg"] = float(np.subtract(*np.percentile(values, [95, 5]))) if values.size else float("nan")
        for lag in AUTOCORR_LAGS:
            out[f"{angle}_autocorr_lag{lag}"] = pearson(x[lag:], x[:-lag]) if len(x) > lag else float("nan")
    return out


def compare_motion(generated: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """motion_stats of both poses (keys prefixed `generated/` and `truth/`) and per angle the ratios
    generated/truth of speed and range (see stability.ratio for a zero truth)."""
    stats = {"generated": motion_stats(generated), "truth": motion_stats(truth)}
    out = {f"{who}/{key}": value for who, s in stats.items() for key, value in s.items()}
    for angle in ANGLES:
        for name, key in (("speed", f"{angle}_speed_deg_per_frame"), ("range", f"{angle}_range_deg")):
            out[f"{angle}_{name}_ratio"] = ratio(stats["generated"][key], stats["truth"][key])
    return out
