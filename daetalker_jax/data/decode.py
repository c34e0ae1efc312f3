"""Video decoding for `prepare`: probe a file, then stream its frames resampled to 25 fps.

Any container/codec FFmpeg (through PyAV) reads. Frames are resampled by timestamp, the way FFmpeg's
fps filter does: output frame k shows the source frame nearest to time k / 25 s.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from daetalker_jax.media import FPS


class SkipClip(Exception):
    """This clip cannot be used; the message is the reason shown in prepare's summary."""


@dataclass(frozen=True)
class Probe:
    width: int
    height: int
    fps: float
    video_seconds: float
    audio_seconds: float | None   # None: no audio stream
    variable_rate: bool


def probe(path: str | os.PathLike) -> Probe:
    """Reads the streams and every video packet's timestamp (no decoding)."""
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                raise SkipClip("no video stream")
            vs = container.streams.video[0]
            audio = container.streams.audio[0] if container.streams.audio else None
            audio_seconds = float(audio.duration * audio.time_base) if audio is not None and audio.duration else None
            pts = sorted(float(p.pts * vs.time_base) for p in container.demux(vs) if p.pts is not None)
            width, height = vs.codec_context.width, vs.codec_context.height
    except av.error.FFmpegError as e:
        raise SkipClip(f"unreadable or corrupt file ({type(e).__name__}: {e})") from e
    if len(pts) < 2:
        raise SkipClip("no video frames")
    steps = np.diff(pts)
    median = float(np.median(steps))
    if median <= 0:
        raise SkipClip("broken video timestamps")
    variable = bool(np.mean(np.abs(steps - median) > 0.25 * median) > 0.05)
    video_seconds = pts[-1] - pts[0] + median
    if audio is not None and audio_seconds is None:
        audio_seconds = video_seconds   # container gives no audio duration: measured after decoding
    return Probe(width, height, 1 / median, video_seconds, audio_seconds, variable)


def frames_25fps(path: str | os.PathLike, n_frames: int) -> Iterator[np.ndarray]:
    """Yields exactly n_frames RGB frames at 25 fps; raises SkipClip if the stream ends early (a
    truncated or corrupt file)."""
    k = 0
    prev, prev_t, t0 = None, None, None
    try:
        with av.open(os.fspath(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                t0 = frame.time if t0 is None else t0
                t = frame.time - t0
                if prev is not None:
                    while k < n_frames and k / FPS < (prev_t + t) / 2:   # prev is the nearest frame
                        yield prev
                        k += 1
                if k >= n_frames:
                    return
                prev, prev_t = frame.to_ndarray(format="rgb24"), t
    except av.error.FFmpegError as e:
        raise SkipClip(f"corrupt or truncated video ({type(e).__name__}: {e})") from e
    if prev is None:
        raise SkipClip("no decodable video frames")
    last_needed = (n_frames - 1) / FPS
    if last_needed - prev_t > 0.5:
        raise SkipClip(f"video stream ends at {prev_t:.2f} s, before its stated length (truncated file?)")
    while k < n_frames:
        yield prev
        k += 1
