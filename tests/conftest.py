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


def logged_losses(workdir: Path) -> list[float]:
    """The training loss of every logged step of a run, from its metrics.jsonl (sample rows carry PSNRs)."""
    import json

    return [r["loss"] for r in map(json.loads, open(Path(workdir) / "metrics.jsonl")) if "loss" in r]


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """A held-out sentence in the held-out voice, 16 kHz."""
    from daetalker_jax.synth.speech import HELD_OUT_VOICES, synthesize

    return synthesize("The birch canoe slid on the smooth planks.", HELD_OUT_VOICES[0], 160, 50)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    return out, corpus.build(TINY, out, workers=1)


def first_test_clip(tiny_corpus: tuple[Path, dict]) -> Path:
    """The mp4 of the tiny corpus' first test clip (its sidecar: the same name with .json)."""
    corpus_dir, manifest = tiny_corpus
    return corpus_dir / next(c for c in manifest["clips"] if c["split"] == "test")["file"]


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


def mesh_of(n: int):
    """A 'data' mesh over the first n (fake CPU) devices."""
    import jax

    return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n], axis_types=(jax.sharding.AxisType.Auto,))


@pytest.fixture(scope="session")
def dae_run(tiny_dataset32, tmp_path_factory) -> Path:
    """A tiny DiffAE (32 px) trained for 2 steps: an encoder/decoder with non-trivial weights."""
    from configs import dae
    from daetalker_jax.trainers.base import Trainer
    from daetalker_jax.trainers.dae import DAETask

    workdir = tmp_path_factory.mktemp("dae_run")
    c = dae.get_config("tiny")
    c.data_dir, c.num_steps, c.checkpoint_every = str(tiny_dataset32), 2, 2
    Trainer(c, workdir, DAETask(c), mesh=mesh_of(1)).run()
    return workdir


@pytest.fixture(scope="session")
def extracted(dae_run, tiny_dataset32, tmp_path_factory) -> Path:
    """A copy of the 32 px dataset with the tiny DiffAE's latents extracted (several chunks, ragged batch)."""
    import shutil

    from daetalker_jax.data.extract import extract_latents

    data = tmp_path_factory.mktemp("extracted") / "data"
    shutil.copytree(tiny_dataset32, data)
    extract_latents(dae_run, data, batch_size=16, chunk=40)
    return data


@pytest.fixture(scope="session")
def s2l_run(extracted, tmp_path_factory) -> Path:
    """A tiny speech2latent (log-mel) trained for 20 steps on those latents."""
    from configs import s2l
    from daetalker_jax.trainers.base import Trainer
    from daetalker_jax.trainers.s2l import S2LTask

    workdir = tmp_path_factory.mktemp("s2l_run")
    c = s2l.get_config("tiny")
    c.data_dir, c.sample_every = str(extracted), 0
    Trainer(c, workdir, S2LTask(c), mesh=mesh_of(1)).run()
    return workdir


@pytest.fixture(scope="session")
def sync_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny sync expert trained for 150 steps on a copy of the 64 px tiny dataset (its mouth crops are
    extracted beside the data, which other tests expect untouched); EMA off: the trained weights."""
    import shutil

    from configs import sync
    from daetalker_jax.trainers.base import Trainer
    from daetalker_jax.trainers.sync import SyncTask

    data_dir = tmp_path_factory.mktemp("sync_data") / "data"
    shutil.copytree(tiny_dataset[0], data_dir)
    workdir = tmp_path_factory.mktemp("sync_run")
    c = sync.get_config("tiny")
    c.data_dir, c.num_steps, c.sample_every, c.checkpoint_every, c.ema_decay = str(data_dir), 150, 150, 150, 0.0
    Trainer(c, workdir, SyncTask(c), mesh=mesh_of(1)).run()
    return workdir


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
