"""The plain-numpy evaluation metrics against hand-computed values on small synthetic inputs."""

import math

import numpy as np
import pytest

from daetalker_jax.metrics.fidelity import SSIM_C1, psnr, ssim
from daetalker_jax.metrics.lipsync import sync_scores
from daetalker_jax.metrics.pose import compare_motion, motion_stats, pose_error
from daetalker_jax.metrics.stability import background_mask, flicker, jitter, ratio, stability


def _image(seed: int, shape=(2, 24, 20, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 226, shape, dtype=np.uint8)


def _smooth_track(n: int, seed: int) -> np.ndarray:
    """A random but smooth mouth-opening track, so shifted copies correlate far less than aligned ones."""
    noise = np.random.default_rng(seed).normal(size=n + 8)
    return np.convolve(noise, np.ones(5) / 5, mode="valid")[:n]


# ---- fidelity ----

def test_psnr_identical_and_constant_offset():
    a = _image(0)
    assert psnr(a, a) == math.inf
    for d in (1, 7, 20):
        assert abs(psnr(a, a + np.uint8(d)) - 20 * math.log10(255 / d)) < 1e-9  # MSE is exactly d^2


def test_ssim_identical_is_exactly_one():
    a = _image(1)
    assert ssim(a, a) == 1.0 and ssim(a[0], a[0]) == 1.0


def test_ssim_of_constant_images_is_the_luminance_term():
    # Zero variance everywhere, so the contrast-structure term is C2 / C2 = 1 and only
    # (2ab + C1) / (a^2 + b^2 + C1) is left (tol: float rounding of the Gaussian sums).
    for a, b in ((100, 120), (10, 200), (0, 255)):
        x, y = np.full((16, 16, 3), a, np.uint8), np.full((16, 16, 3), b, np.uint8)
        assert abs(ssim(x, y) - (2 * a * b + SSIM_C1) / (a * a + b * b + SSIM_C1)) < 1e-9


def test_ssim_matches_an_explicit_11x11_window():
    # The paper's recipe written out: an explicit normalised 11x11 Gaussian (sigma 1.5) slid over the
    # positions where it fits ('valid'), per channel; tol: float summation order.
    offsets = np.arange(-5, 6)
    g = np.exp(-offsets**2 / (2 * 1.5**2))
    window = np.outer(g, g) / g.sum() ** 2
    a, b = _image(8, (13, 12, 3)), _image(9, (13, 12, 3))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def stat(v):  # the window mean at each of the 3 x 2 positions where it fits
        return np.array([[np.sum(window * v[i:i + 11, j:j + 11]) for j in range(2)] for i in range(3)])

    scores = []
    for c in range(3):
        x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
        mx, my = stat(x), stat(y)
        vx, vy, cxy = stat(x * x) - mx**2, stat(y * y) - my**2, stat(x * y) - mx * my
        scores.append(((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    assert abs(ssim(a, b) - np.mean(scores)) < 1e-12


def test_ssim_falls_with_noise():
    a = _image(2).astype(np.float64)
    noise = np.random.default_rng(3).normal(size=a.shape)
    scores = [ssim(a.astype(np.uint8), np.clip(a + s * noise, 0, 255).astype(np.uint8)) for s in (3, 10, 30)]
    assert 0.5 < scores[0] < 1 and scores[0] > scores[1] > scores[2], scores


def test_ssim_rejects_bad_shapes():
    with pytest.raises(ValueError):
        ssim(_image(0), _image(0, (2, 24, 21, 3)))
    with pytest.raises(ValueError):
        ssim(_image(0, (10, 10, 3)), _image(0, (10, 10, 3)))


# ---- lip sync ----

@pytest.mark.parametrize("k", [3, -2, 0])
def test_sync_finds_the_shift(k):
    truth = _smooth_track(120, seed=4)
    generated = np.roll(truth, k)  # generated[t] = truth[t - k]: lags the truth by k frames
    scores = sync_scores(generated, truth)
    assert scores["best_offset"] == k and abs(scores["r_best"] - 1) < 1e-12, scores
    assert (scores["r"] < 0.9) if k else (scores["r"] == pytest.approx(1) and scores["mae"] == 0)


def test_sync_ignores_nans_and_uses_the_common_prefix():
    truth = _smooth_track(100, seed=5)
    generated = np.roll(truth, 3)
    generated[[10, 40, 41]] = np.nan
    truth_nan = truth.copy()
    truth_nan[70] = np.nan
    scores = sync_scores(np.concatenate([generated, np.ones(9)]), truth_nan)  # the 9 extra frames are dropped
    assert scores["best_offset"] == 3 and abs(scores["r_best"] - 1) < 1e-12
    same = sync_scores(truth_nan, truth_nan)
    assert same["mae"] == 0 and same["r"] == pytest.approx(1)


@pytest.mark.parametrize("gain", [0.5, 1.0, 1.3])
def test_amplitude_is_the_std_ratio(gain):
    truth = _smooth_track(200, seed=8)
    generated = gain * (truth - truth.mean()) + 0.7          # the same motion, scaled and shifted
    generated[[5, 90]] = np.nan                               # dropped with their truth
    scores = sync_scores(generated, truth)
    keep = np.ones(200, bool)
    keep[[5, 90]] = False
    expected = np.sqrt(np.mean((generated[keep] - generated[keep].mean()) ** 2) /
                       np.mean((truth[keep] - truth[keep].mean()) ** 2))
    assert scores["amplitude"] == pytest.approx(gain, rel=1e-12) == pytest.approx(expected, rel=1e-12)
    assert scores["r"] == pytest.approx(1)                    # r alone cannot see a shrunken mouth


def test_amplitude_of_a_mouth_that_does_not_move_is_zero():
    truth = _smooth_track(80, seed=9)
    assert sync_scores(np.full(80, 0.3), truth)["amplitude"] == 0
    rounding = 0.3 + np.random.default_rng(1).normal(0, 1e-16, 80)   # identical frames, a probe's float noise
    assert sync_scores(rounding, truth)["amplitude"] == 0 and math.isnan(sync_scores(rounding, truth)["r"])
    assert math.isnan(sync_scores(truth, np.ones(80))["amplitude"])   # undefined against a constant truth


def test_sync_constant_track_is_nan():
    scores = sync_scores(np.ones(50), _smooth_track(50, seed=6))
    assert all(math.isnan(scores[key]) for key in ("r", "best_offset", "r_best"))
    assert scores["mae"] > 0


# ---- pose ----

def test_pose_error_zero_and_constant_offset():
    rng = np.random.default_rng(7)
    requested = rng.uniform(-30, 30, (40, 3))
    assert all(v == 0 for v in pose_error(requested, requested).values())
    generated = requested + np.array([2.0, -1.5, 0.5])
    generated[5] = np.nan  # ignored
    err = pose_error(np.concatenate([generated, np.zeros((5, 3))]), requested)  # extra rows ignored
    for angle, d in zip(("yaw", "pitch", "roll"), (2.0, 1.5, 0.5)):
        assert abs(err[f"{angle}_median_abs_deg"] - d) < 1e-9 and abs(err[f"{angle}_mean_abs_deg"] - d) < 1e-9


def test_motion_stats_of_a_sine_and_a_constant():
    # yaw = 10 sin(2 pi t / 20) over t = 0..100: five whole periods sampled at the peaks, so the summed
    # |step| is 4 * 10 per period and the speed is 5 * 40 / 100 = 2 deg/frame; roll mirrors it.
    t = np.arange(101)
    yaw = 10 * np.sin(2 * np.pi * t / 20)
    pose = np.stack([yaw, np.full(101, 5.0), -yaw], axis=1)
    stats = motion_stats(pose)
    assert abs(stats["yaw_speed_deg_per_frame"] - 2) < 1e-9 and abs(stats["roll_speed_deg_per_frame"] - 2) < 1e-9
    assert stats["pitch_speed_deg_per_frame"] == 0 and stats["pitch_range_deg"] == 0
    assert math.isnan(stats["pitch_autocorr_lag1"])  # a constant has no correlation
    # the 5 largest of the 101 samples are the peaks (10), the next is 10 sin(72 deg): that is the 95th percentile
    assert abs(stats["yaw_range_deg"] - 20 * np.sin(np.radians(72))) < 1e-9
    # lag 1 of a period-20 sine is about cos(18 deg), lag 5 (a quarter period) about 0; tol: finite sample
    assert abs(stats["yaw_autocorr_lag1"] - np.cos(2 * np.pi / 20)) < 0.01 and abs(stats["yaw_autocorr_lag5"]) < 0.05
    # a NaN at t = 50 (yaw 0) drops the two steps touching it, each 10 sin(18 deg)
    pose[50] = np.nan
    speed = (200 - 20 * np.sin(np.radians(18))) / 98
    assert abs(motion_stats(pose)["yaw_speed_deg_per_frame"] - speed) < 1e-9


def test_compare_motion_ratios():
    t = np.arange(100)
    truth = np.stack([10 * np.sin(2 * np.pi * t / 20)] * 3, axis=1)
    truth[:, 1] = 0  # a still pitch in the truth
    out = compare_motion(2 * truth, truth)
    assert out["yaw_speed_ratio"] == pytest.approx(2) and out["yaw_range_ratio"] == pytest.approx(2)
    assert out["pitch_speed_ratio"] == 1.0  # both still
    assert out["generated/yaw_speed_deg_per_frame"] == pytest.approx(2 * out["truth/yaw_speed_deg_per_frame"])


# ---- stability ----

def _moving_square_video(n=8, size=(20, 24), gray=100) -> tuple[np.ndarray, np.ndarray]:
    """A static gray background with a white 4x4 square moving 2 px right per frame; also its path."""
    frames = np.full((n, *size, 3), gray, np.uint8)
    path = np.zeros(size, bool)
    for i in range(n):
        frames[i, 6:10, 2 * i:2 * i + 4] = 255
        path[6:10, 2 * i:2 * i + 4] = True
    return frames, path


def test_background_mask_excludes_the_moving_square():
    truth, path = _moving_square_video()
    np.testing.assert_array_equal(background_mask(truth), ~path)
    assert flicker(truth, background_mask(truth)) == 0


def test_background_flicker_is_measured_on_the_mask():
    truth, path = _moving_square_video()
    k = 3
    generated = truth.astype(np.int16)
    generated[:, ~path] += np.where(np.arange(len(truth)) % 2, -k, k)[:, None, None]  # +k, -k, +k, ...
    generated = generated.astype(np.uint8)
    # the background swings between gray+k and gray-k, so every step is 2k in each channel and in luma
    out = stability(generated, truth)
    assert abs(out["flicker"] - 2 * k) < 1e-9 and out["flicker_truth"] == 0 and out["flicker_ratio"] == math.inf
    assert out["jitter"] > out["jitter_truth"] > 0 and out["jitter_ratio"] > 1
    # jitter by hand: each step moves the square 2 px (8 pixels change by the luma step 155 on each side)
    assert abs(jitter(truth) - 16 * 155 / (20 * 24)) < 1e-9
    same = stability(truth, truth)
    assert same["flicker_ratio"] == 1.0 and same["jitter_ratio"] == 1.0


def test_stability_frame_rules():
    truth, _ = _moving_square_video()
    with pytest.raises(ValueError, match=r"\(20, 24\).*\(20, 25\)"):
        stability(truth, np.zeros((8, 20, 25, 3), np.uint8))
    assert stability(truth[:5], truth)["jitter_ratio"] == 1.0  # common prefix of 5 frames


def test_ratio_conventions():
    assert ratio(2.0, 4.0) == 0.5 and ratio(0.0, 0.0) == 1.0 and ratio(1.0, 0.0) == math.inf
    assert math.isnan(ratio(float("nan"), 0.0))
