"""Shared fixtures: a tiny synthetic corpus built once per test session, and speech-file writers."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

# 8 fake CPU devices for the sharding tests; must be set before anything imports jax.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Identical steps compiled by several trainers in one session are compiled once.
_cache = os.path.join(os.environ.get("TMPDIR", "/tmp"), "daetalker-jax-cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from daetalker_jax.synth import corpus, speech  # noqa: E402
from daetalker_jax.synth.sentences import HARVARD  # noqa: E402

TINY = corpus.CorpusSettings(minutes=0.15, size=64, seed=3, identities=1, voices=speech.TRAIN_VOICES[:2],
                             held_out_voices=speech.HELD_OUT_VOICES, sentences=HARVARD)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    return out, corpus.build(TINY, out, workers=1)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_corpus, tmp_path_factory) -> tuple[Path, dict]:
    """The tiny corpus prepared into a TFDS dataset (sidecar crop and pose)."""
    from daetalker_jax.data.prepare import PrepareConfig, prepare

    corpus_dir, _ = tiny_corpus
    out = tmp_path_factory.mktemp("data")
    return out, prepare(corpus_dir / "manifest.json", out, PrepareConfig(size=64), workers=1)


@pytest.fixture(scope="session")
def tiny_dataset32(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus prepared at 32x32 for the tiny DiffAE config."""
    from daetalker_jax.data.prepare import PrepareConfig, prepare

    corpus_dir, _ = tiny_corpus
    out = tmp_path_factory.mktemp("data32")
    prepare(corpus_dir / "manifest.json", out, PrepareConfig(size=32), workers=1)
    return out


def write_audio(path: Path, audio: np.ndarray, sr: int, codec: str, channels: int = 1) -> Path:
    """Encodes mono float audio into any container/codec PyAV has (wav, flac, mp3, ...)."""
    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec, rate=sr, layout=layout)
        fmt = stream.codec_context.codec.audio_formats[0].name
        data = np.repeat(audio[None, :], channels, 0).astype(np.float32)
        if fmt.startswith("s16"):
            data = (np.clip(data, -1, 1) * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = (np.clip(data, -1, 1) * 2**31 * 0.999).astype(np.int32)
        step = stream.codec_context.frame_size or 1024
        for start in range(0, data.shape[1], step):
            chunk = data[:, start:start + step]
            if fmt.endswith("p"):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=layout)
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.T.reshape(1, -1)), format=fmt,
                                                   layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def read_sidecar(corpus_dir: Path, clip_id: str) -> dict:
    return json.loads((corpus_dir / "clips" / f"{clip_id}.json").read_text())
