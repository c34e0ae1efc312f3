"""Per-clip intermediate results of `prepare`: one .npz per finished clip, written atomically, so an
interrupted prepare resumes by skipping clips whose file exists. The TFDS builder reads these."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daetalker_jax.errors import atomic_path


@dataclass
class CachedClip:
    jpeg_bytes: np.ndarray   # all frames' JPEG files, concatenated (uint8)
    offsets: np.ndarray      # (n_frames + 1,) byte offsets into jpeg_bytes
    audio: np.ndarray        # (samples,) int16 at 16 kHz, exactly n_frames * 640 samples
    mel: np.ndarray          # (4 * n_frames, 80) float32 log-mel at 100 Hz
    pose: np.ndarray         # (n_frames, 3) float32 yaw, pitch, roll in degrees
    meta: dict

    def jpegs(self) -> Iterator[bytes]:
        for a, b in zip(self.offsets[:-1], self.offsets[1:]):
            yield self.jpeg_bytes[a:b].tobytes()


def clip_path(cache_dir: Path, clip_id: str) -> Path:
    return Path(cache_dir) / f"{clip_id}.npz"


def save_clip(cache_dir: Path, clip_id: str, jpegs: list[bytes], audio: np.ndarray, mel: np.ndarray,
              pose: np.ndarray, meta: dict) -> None:
    offsets = np.cumsum([0] + [len(j) for j in jpegs]).astype(np.int64)
    with atomic_path(clip_path(cache_dir, clip_id)) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, jpeg_bytes=np.frombuffer(b"".join(jpegs), np.uint8), offsets=offsets, audio=audio,
                     mel=mel.astype(np.float32), pose=pose.astype(np.float32),
                     meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))


def load_clip(cache_dir: Path, clip_id: str) -> CachedClip:
    with np.load(clip_path(cache_dir, clip_id)) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    return CachedClip(meta=meta, **arrays)
