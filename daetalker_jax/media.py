"""Audio and video I/O through PyAV (bundled FFmpeg): any common container in, H.264/AAC mp4 out."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from scipy.signal import resample_poly

from daetalker_jax.errors import UserError, atomic_path

SAMPLE_RATE = 16_000
FPS = 25
PCM_SCALE = 32767   # prepared datasets store audio as int16 samples: clip(audio, -1, 1) * PCM_SCALE


def resample(audio: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (exact rational ratio), float32 in and out."""
    if sr_in == sr_out:
        return audio.astype(np.float32)
    g = np.gcd(sr_in, sr_out)
    return resample_poly(audio, sr_out // g, sr_in // g).astype(np.float32)


def load_audio(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decodes the first audio stream of any file FFmpeg reads, mixed to mono, resampled to `sr`.

    Raises UserError for missing, empty, corrupt or non-audio files.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise UserError(f"speech file {path} does not exist")
    if os.path.getsize(path) == 0:
        raise UserError(f"speech file {path} is empty (0 bytes)")
    chunks: list[np.ndarray] = []
    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise UserError(f"{path} has no audio stream; give a wav/flac/mp3/m4a speech file")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", rate=sr)   # keeps the channels: we average them
            for frame in itertools.chain(container.decode(stream), [None]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(0))
    except av.error.FFmpegError as e:
        raise UserError(f"cannot decode {path} as audio ({e}); is it a corrupt or non-audio file?") from e
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size < sr // 10:
        raise UserError(f"{path} holds {audio.size / sr:.3f} s of audio; at least 0.1 s is needed")
    return audio.astype(np.float32)


def resized(frames: Iterable[np.ndarray], size: int | None) -> Iterator[np.ndarray]:
    """uint8 frames resized to size x size (bicubic); as they are when size is None or already theirs."""
    from PIL import Image

    for frame in frames:
        if size is None or frame.shape[:2] == (size, size):
            yield frame
        else:
            yield np.asarray(Image.fromarray(frame).resize((size, size), Image.BICUBIC))


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], audio: np.ndarray | None,
              fps: int = FPS, sr: int = SAMPLE_RATE, crf: int = 18, preset: str = "veryfast") -> int:
    """Writes uint8 RGB frames (H.264, yuv420p) plus mono float audio (AAC) atomically.

    One encoder thread keeps the output byte-identical for identical inputs. Returns the frame count.
    """
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError("write_mp4 got no frames")
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as out:
            video = out.add_stream("libx264", rate=fps)
            video.height, video.width = first.shape[:2]
            video.pix_fmt, video.thread_count = "yuv420p", 1
            video.options = {"crf": str(crf), "preset": preset}
            astream = None
            if audio is not None:
                astream = out.add_stream("aac", rate=sr, layout="mono")
            for frame in itertools.chain([first], it):
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for packet in video.encode(vf):
                    out.mux(packet)
                n += 1
            for packet in video.encode():
                out.mux(packet)
            if astream is not None:
                _encode_audio(out, astream, audio, sr)
    return n


def _encode_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                  audio: np.ndarray, sr: int) -> None:
    pcm = np.clip(audio, -1.0, 1.0).astype(np.float32)
    step = 1024
    for start in range(0, pcm.size, step):
        chunk = pcm[start:start + step]
        frame = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


@dataclass
class Video:
    frames: np.ndarray          # (N, H, W, 3) uint8
    fps: float
    audio: np.ndarray | None    # mono float32 at `sr`
    sr: int


def read_mp4(path: str | os.PathLike, sr: int = SAMPLE_RATE) -> Video:
    """Decodes all frames (RGB) and the audio track (mono, resampled to `sr`) of a video file."""
    with av.open(os.fspath(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(vstream)])
        has_audio = bool(container.streams.audio)
    return Video(frames, fps, load_audio(path, sr) if has_audio else None, sr)
