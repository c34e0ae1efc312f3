"""Head-pose control for generation (`--pose`): the pose track fed to speech2latent's pose projection.

  predicted                    speech2latent's own pose predictor (None here)
  yaw=5,pitch=-3,roll=0        constant angles in degrees (missing ones are 0)
  file:pose.csv                one row per 25 fps frame: yaw,pitch,roll in degrees (a header is allowed)
  video:ref.mp4                the head-pose track of a reference video, measured as `prepare` does
A track shorter than the speech holds its last pose; a longer one is cut.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from daetalker_jax.errors import UserError

ANGLES = ("yaw", "pitch", "roll")


def _constant(spec: str) -> np.ndarray:
    values = dict.fromkeys(ANGLES, 0.0)
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(yaw|pitch|roll)\s*=\s*([-+]?\d+(?:\.\d*)?)\s*", part)
        if m is None:
            raise UserError(f"cannot read the pose {spec!r}: write e.g. yaw=10,pitch=-5,roll=0 (degrees)")
        values[m.group(1)] = float(m.group(2))
    return np.array([[values[a] for a in ANGLES]], np.float32)


def _csv(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"pose file {path} does not exist")
    rows = []
    for k, line in enumerate(path.read_text(errors="replace").splitlines()):
        cells = [c.strip() for c in line.replace(";", ",").split(",") if c.strip()]
        if not cells or (k == 0 and cells[0].lower() in ANGLES):
            continue   # blank line or header
        try:
            values = [float(c) for c in cells]
        except ValueError:
            raise UserError(f"pose file {path}, line {k + 1}: {line!r} is not three numbers (yaw,pitch,roll)") from None
        if len(values) != 3 or not np.all(np.isfinite(values)):
            raise UserError(f"pose file {path}, line {k + 1}: expected 3 finite numbers yaw,pitch,roll, got {line!r}")
        rows.append(values)
    if not rows:
        raise UserError(f"pose file {path} holds no rows of yaw,pitch,roll")
    pose = np.asarray(rows, np.float32)
    if np.abs(pose).max() > 90:
        raise UserError(f"pose file {path} has angles beyond 90 degrees; angles must be in degrees")
    return pose


def _video(path: Path) -> np.ndarray:
    from daetalker_jax.data.decode import SkipClip, frames_25fps, probe
    from daetalker_jax.data.face import FaceAnalyzer
    from daetalker_jax.data.prepare import PrepareConfig, pose_track
    from daetalker_jax.media import FPS

    if not path.is_file():
        raise UserError(f"pose reference video {path} does not exist")
    try:
        n = int(np.floor(probe(path).video_seconds * FPS + 1e-6))
        analyzer = FaceAnalyzer()
        poses = [analyzer.pose(frame) or (np.nan,) * 3 for frame in frames_25fps(path, n)]
        return pose_track(poses, PrepareConfig().pose_smooth_frames)
    except SkipClip as e:
        raise UserError(f"cannot take the head pose from {path}: {e}") from e


def parse_pose(spec: str) -> np.ndarray | None:
    """--pose value -> (N, 3) degrees, or None for the predicted pose."""
    spec = spec.strip()
    if spec == "predicted":
        return None
    if spec.startswith("file:"):
        return _csv(Path(spec[5:]))
    if spec.startswith("video:"):
        return _video(Path(spec[6:]))
    if "=" in spec:
        return _constant(spec)
    raise UserError(f"unknown --pose {spec!r}: use predicted, yaw=..,pitch=..,roll=.., file:pose.csv or video:ref.mp4")


def fit_length(pose: np.ndarray, n_frames: int) -> np.ndarray:
    """Holds the last pose past the track's end, or cuts the track, to n_frames rows."""
    pose = np.asarray(pose, np.float32).reshape(-1, 3)
    if len(pose) >= n_frames:
        return pose[:n_frames]
    return np.concatenate([pose, np.repeat(pose[-1:], n_frames - len(pose), 0)])
