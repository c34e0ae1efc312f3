"""Stage-2 inputs derived from a prepared dataset, stored beside it (data/clip_arrays.py):

  latents: every frame through the frozen EMA semantic encoder of a trained DiffAE -> (n_frames, z) per
           clip, plus per-dimension mean/std over the train split for z-normalisation;
  speech:  every clip's audio through a wav2vec 2.0 / HuBERT checkpoint -> (2 n_frames, layers, hidden)
           float16 per clip (all hidden states, so speech2latent can learn its layer weights), plus
           per-layer mean/std over the train split;
  mouths:  the grayscale mouth crop of every frame (metrics/syncnet.py) for the sync expert
           (trainers/sync.py), made on demand when a sync run starts.

All are resumable (finished work is kept on disk and skipped), show progress, and split the work over
processes: each process encodes its share on its own devices, process 0 then gathers and writes the
statistics. Frame records are stored in a shuffled order, so latents are computed in fixed chunks of
records (parts/), and assembled per clip at the end.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grain
import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

from daetalker_jax.data.clip_arrays import ClipArrays
from daetalker_jax.data.pipeline import DATASET, clip_audio, data_source, frame_size
from daetalker_jax.errors import UserError, atomic_path


def splits_of(data_dir: str | Path) -> dict[str, list[str]]:
    path = Path(data_dir) / DATASET / "splits.json"
    if not path.exists():
        raise UserError(f"{data_dir} is not a prepared dataset (no {DATASET}/splits.json); make one with "
                        "`python -m daetalker_jax.prepare`")
    return {k: v for k, v in json.loads(path.read_text()).items() if v}


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _mean_std(store: ClipArrays, clips: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over all rows (axis 0) of the given clips, accumulated in float64."""
    total, total_sq, count = 0.0, 0.0, 0
    for clip in clips:
        x = np.asarray(store[clip], np.float64)
        total, total_sq, count = total + x.sum(0), total_sq + (x**2).sum(0), count + len(x)
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-5).astype(np.float32)


def _clip_indices(data_dir: str | Path, split: str) -> list[int]:
    source = data_source(str(data_dir), "clips", split)
    return [int(source[i]["clip"]) for i in range(len(source))]


def _begin(store: ClipArrays, identity: dict) -> bool:
    """True if the store is already complete for `identity`; clears work made from something else. Every process
    reads the store's state before any process changes it, so all take the same branch (and the same barriers)."""
    meta_path = store.dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    stale = store.dir.exists() and {k: meta.get(k) for k in identity} != identity
    _barrier(f"read-{store.name}")
    if not stale and meta.get("complete"):
        return True
    if jax.process_index() == 0:
        if stale:
            shutil.rmtree(store.dir)
        store.write_meta({**identity, "complete": False})
    _barrier(f"begin-{store.name}")
    return False


def _finish(store: ClipArrays, data_dir: str | Path, identity: dict, extra: dict) -> dict:
    """Process 0 writes the train-split statistics and marks the store complete."""
    _barrier(f"done-{store.name}")
    meta = {**identity, **extra, "complete": True}
    if jax.process_index() == 0:
        clips = {split: _clip_indices(data_dir, split) for split in splits_of(data_dir)}
        mean, std = _mean_std(store, clips.get("train") or next(iter(clips.values())))
        meta.update(clips=clips, mean=mean.tolist(), std=std.tolist())
        store.write_meta(meta)
    _barrier(f"meta-{store.name}")
    return store.meta


def extract_latents(dae_workdir: str | Path, data_dir: str | Path, batch_size: int = 256,
                    chunk: int = 8192, workers: int = 8) -> dict:
    """Encodes every frame of every split with the DiffAE's EMA encoder; returns the store's meta."""
    from daetalker_jax.trainers.base import load_trained
    from daetalker_jax.trainers.dae import to_unit_range

    config, model = load_trained(dae_workdir)
    if config.task != "dae":
        raise UserError(f"--dae {dae_workdir} is a {config.task!r} run, not a DiffAE run")
    splits = list(splits_of(data_dir))
    data_size = frame_size(str(data_dir), splits[0])
    if data_size not in (None, config.model.image_size):
        raise UserError(f"the DiffAE in {dae_workdir} works on {config.model.image_size}px images but the dataset "
                        f"{data_dir} holds {data_size}px frames; prepare the data with --size "
                        f"{config.model.image_size} or train a DiffAE at {data_size}px")
    store = ClipArrays(data_dir, "latents")
    identity = {"dae": str(Path(dae_workdir).absolute()), "step": int(_latest_step(dae_workdir))}
    if _begin(store, identity):
        return store.meta
    devices = jax.local_devices()
    batch_size = -(-batch_size // len(devices)) * len(devices)
    sharding = NamedSharding(Mesh(np.array(devices), ("data",)), PartitionSpec("data"))
    graphdef, state = nnx.split(model)
    state = jax.device_put(state, NamedSharding(sharding.mesh, PartitionSpec()))
    encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(to_unit_range(x)))

    def rows(images: np.ndarray) -> np.ndarray:   # padded to one batch shape: one compilation
        n = len(images)
        images = np.pad(images, [(0, batch_size - n), (0, 0), (0, 0), (0, 0)])
        return np.asarray(encode(state, jax.device_put(images, sharding)), np.float32)[:n]

    _per_frame(store, data_dir, splits, rows, batch_size, chunk, workers, "extract latents")
    return _finish(store, data_dir, identity, {"image_size": int(config.model.image_size),
                                                "latent_dim": int(config.model.z_channels)})


def _per_frame(store: ClipArrays, data_dir: str | Path, splits: list[str], rows, batch_size: int, chunk: int,
               workers: int, desc: str) -> None:
    """`rows(images uint8 (B, S, S, 3)) -> (B, ...)` over every frame record of the splits, in fixed chunks
    of records written to parts/ (resumable, shared over processes), then one array per clip."""
    parts = store.dir / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    jobs = []   # (split, chunk index, start, stop)
    for split in splits:
        n = len(data_source(str(data_dir), "frames", split))
        jobs += [(split, k, start, min(n, start + chunk)) for k, start in enumerate(range(0, n, chunk))]
    jobs = jobs[jax.process_index()::jax.process_count()]
    todo = [j for j in jobs if not (parts / f"{j[0]}_{j[1]:06d}.npz").exists()]
    bar = tqdm(total=sum(j[3] - j[2] for j in jobs), initial=sum(j[3] - j[2] for j in jobs if j not in todo),
               desc=desc, unit="frame", disable=jax.process_index() != 0)
    for split, k, start, stop in todo:
        ds = (grain.MapDataset.source(data_source(str(data_dir), "frames", split))[start:stop]
              .map(lambda ex: {"image": ex["image"], "clip": np.int32(ex["clip"]), "frame": np.int32(ex["frame"])})
              .batch(batch_size))
        out = {"clip": [], "frame": [], "z": []}
        for b in ds.to_iter_dataset(grain.ReadOptions(num_threads=workers, prefetch_buffer_size=2 * workers)):
            out["z"].append(rows(b["image"]))
            out["clip"].append(b["clip"])
            out["frame"].append(b["frame"])
            bar.update(len(b["image"]))
        with atomic_path(parts / f"{split}_{k:06d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **{key: np.concatenate(v) for key, v in out.items()})
    bar.close()
    _barrier(f"{store.name}-parts")
    if jax.process_index() == 0:
        _assemble(store, parts)


def mouth_store(data_dir: str | Path, height: int, width: int) -> ClipArrays:
    return ClipArrays(data_dir, f"mouths_{height}x{width}")


def extract_mouths(data_dir: str | Path, height: int, width: int, batch_size: int = 256, chunk: int = 8192,
                   workers: int = 8) -> dict:
    """The mouth crop of every frame for the sync expert (metrics/syncnet.py: `mouth_crops`, grayscale
    uint8 (n_frames, height, width) per clip); returns the store's meta."""
    from daetalker_jax.metrics.syncnet import mouth_crops

    store = mouth_store(data_dir, height, width)
    identity = {"height": int(height), "width": int(width)}
    if _begin(store, identity):
        return store.meta
    _per_frame(store, data_dir, list(splits_of(data_dir)), lambda images: mouth_crops(images, (height, width)),
               batch_size, chunk, workers, "extract mouth crops")
    return _finish(store, data_dir, identity, {})


def _latest_step(workdir: str | Path) -> int:
    from daetalker_jax.checkpoint import Checkpoints

    ckpt = Checkpoints(Path(workdir) / "checkpoints")
    try:
        return ckpt.latest_step or 0
    finally:
        ckpt.close()


def _assemble(store: ClipArrays, parts: Path) -> None:
    """parts/*.npz (clip, frame, z rows in record order) -> one (n_frames, z) array per clip."""
    rows = [np.load(p) for p in sorted(parts.glob("*.npz"))]
    clip = np.concatenate([r["clip"] for r in rows])
    frame = np.concatenate([r["frame"] for r in rows])
    z = np.concatenate([r["z"] for r in rows])
    for c in np.unique(clip):
        sel = np.flatnonzero(clip == c)
        order = sel[np.argsort(frame[sel])]
        if not np.array_equal(frame[order], np.arange(len(order))):
            raise UserError(f"frames of clip {c} are missing from the dataset; prepare it again")
        store.write(int(c), z[order])
    shutil.rmtree(parts)


def extract_speech(model_dir: str | Path, data_dir: str | Path, chunk_seconds: float = 20.0) -> dict:
    """All hidden states of a wav2vec 2.0 / HuBERT checkpoint for every clip, two per video frame."""
    from daetalker_jax.models.wav2vec2 import features_for_frames, load_encoder

    cfg, encoder = load_encoder(model_dir)
    store = ClipArrays(data_dir, "speech")
    identity = {"speech_model": str(Path(model_dir).absolute())}
    if _begin(store, identity):
        return store.meta
    jobs = []
    for split in splits_of(data_dir):
        source = data_source(str(data_dir), "clips", split)
        jobs += [(source, i) for i in range(len(source))]
    mine = jobs[jax.process_index()::jax.process_count()]
    for source, i in tqdm(mine, desc="extract speech features", unit="clip", disable=jax.process_index() != 0):
        ex = source[i]
        if store.has(int(ex["clip"])):
            continue
        wave = clip_audio(ex)
        feats = features_for_frames(encoder, cfg, wave, int(ex["n_frames"]), chunk_seconds=chunk_seconds)
        store.write(int(ex["clip"]), feats.astype(np.float16))
    return _finish(store, data_dir, identity, {"model_type": cfg.model_type, "layers": cfg.num_hidden_layers + 1,
                                                "hidden_size": cfg.hidden_size, "per_frame": 2})
