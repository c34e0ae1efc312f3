"""Grain input pipelines over the prepared TFDS dataset.

  frames:    global shuffle (a new order every epoch) -> repeat -> this process' shard -> decode
             (JPEG, in the source) -> optional augmentation -> batch. For the DiffAE.
  sequences: the same over clips, then a random window of N frames with the aligned log-mel (4 per
             frame), audio (640 samples per frame), pose and, once extracted, latents and speech
             features; clips shorter than the window are padded and masked; optional speech
             augmentation (`augment.py`). For speech2latent.
Both are deterministic given the seed; process p of P reads global elements p, p + P, ... so the
processes cover every epoch disjointly and completely. Iterators checkpoint with orbax through
`grain.checkpoint.CheckpointSave/CheckpointRestore`. `to_global` glues per-process batches into global
`jax.Array`s sharded over the mesh's 'data' axis.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grain
import numpy as np

from daetalker_jax.data.augment import SpeechAugment, resample_frames
from daetalker_jax.data.features import MELS_PER_FRAME, N_MELS
from daetalker_jax.errors import UserError
from daetalker_jax.media import FPS, PCM_SCALE, SAMPLE_RATE

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
DATASET = "daetalker_data"


def clip_audio(example: Mapping[str, Any]) -> np.ndarray:
    """A clip record's speech as float32 in [-1, 1], the scale every speech front-end is trained on."""
    return np.asarray(example["audio"], np.float32) / PCM_SCALE


def clip_name(example: Mapping[str, Any]) -> str:
    """A clip record's `clip_id` as str (the records hold it as bytes)."""
    name = example["clip_id"]
    return name.decode() if isinstance(name, bytes) else str(name)


def data_source(data_dir: str, config: str, split: str):
    """The TFDS ArrayRecord source (random access, TF-free); data_dir may be local or a bucket path."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(f"{DATASET}/{config}", data_dir=data_dir, split=split)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(f"{data_dir} is not a prepared dataset (no {DATASET}/{config} in it); make one with "
                        "`python -m daetalker_jax.prepare --out DIR` and pass that folder") from None


def frame_size(data_dir: str, split: str) -> int | None:
    """The side of a split's (square) frames, from its first record; None for an empty split."""
    source = data_source(data_dir, "frames", split)
    return source[0]["image"].shape[0] if len(source) else None


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def of_this_process(cls) -> Shard:
        import jax

        return cls(jax.process_index(), jax.process_count())


class _ShardRows(grain.MapDataset):
    """This process' rows of every global batch: with B = global batch and L = B / processes, the local
    element i is global element (i // L) * B + index * L + i % L. The per-host batches glued in process
    order (`to_global`) are then exactly the global batches of a single process."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, shard: Shard):
        super().__init__(parent)
        self._batch, self._local, self._offset = global_batch, global_batch // shard.count, shard.index
        self._offset *= self._local

    def __len__(self) -> int:
        return len(self._parent) // self._batch * self._local

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        k, j = divmod(index, self._local)
        return self._parent[k * self._batch + self._offset + j]

    def __str__(self) -> str:
        return f"ShardRows(batch={self._batch}, local={self._local}, offset={self._offset})"


def _sharded(source, seed: int, shard: Shard, global_batch: int, example: grain.transforms.RandomMap
             ) -> grain.MapDataset:
    """Shuffled, endless, `example` applied, then this process' rows of each global batch. The random
    transform comes before the split so each global element draws the same randomness (e.g. the same
    window) whatever the number of processes: N processes then train exactly like 1."""
    ds = grain.MapDataset.source(source).seed(seed).shuffle().repeat().random_map(example, seed=seed + 1)
    return _ShardRows(ds, global_batch, shard) if shard.count > 1 else ds


def _local_batch(global_batch: int, shard: Shard) -> int:
    if global_batch % shard.count:
        raise ValueError(f"global batch {global_batch} is not divisible by {shard.count} processes")
    return global_batch // shard.count


def _iterate(ds: grain.MapDataset, workers: int, prefetch: int) -> grain.IterDataset:
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=max(1, prefetch // 2), prefetch_buffer_size=prefetch))
    if workers > 0:
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
    return it


class _FrameExample(grain.transforms.RandomMap):
    def __init__(self, augment: bool, hflip: bool):
        self.augment, self.hflip = augment, hflip

    def random_map(self, ex: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        image = np.asarray(ex["image"])
        if self.augment:   # mild photometric jitter; geometry is left alone so the pose stays true
            gain, bias = rng.uniform(0.9, 1.1), rng.uniform(-8, 8)
            image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        if self.hflip and rng.random() < 0.5:   # off by default: it mirrors yaw and roll
            image = image[:, ::-1]
        return {"image": image, "pose": np.asarray(ex["pose"], np.float32), "clip": np.int32(ex["clip"]),
                "frame": np.int32(ex["frame"])}


def frame_dataset(data_dir: str, split: str, global_batch: int, seed: int = 0, *, shard: Shard = Shard(),
                  augment: bool = False, hflip: bool = False, workers: int = 0, prefetch: int = 8
                  ) -> grain.IterDataset:
    """Endless batches {"image": uint8 (B, H, W, 3), "pose", "clip", "frame"} of this process' shard."""
    ds = _sharded(data_source(data_dir, "frames", split), seed, shard, global_batch, _FrameExample(augment, hflip))
    return _iterate(ds.batch(_local_batch(global_batch, shard), drop_remainder=True), workers, prefetch)


def frame_batch_spec(global_batch: int, size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each entry of `frame_dataset`'s global batches, for compiling without the data."""
    return {"image": ((global_batch, size, size, 3), np.dtype(np.uint8)),
            "pose": ((global_batch, 3), np.dtype(np.float32)),
            "clip": ((global_batch,), np.dtype(np.int32)), "frame": ((global_batch,), np.dtype(np.int32))}


def sequence_batch_spec(global_batch: int, window_frames: int, extras: Mapping[str, tuple[tuple[int, ...], int]]
                        ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each entry of `sequence_dataset`'s global batches, for compiling without the data;
    extras: name -> (row shape, rows per video frame), float32 (e.g. "latents": ((512,), 1))."""
    b, w, f32 = global_batch, window_frames, np.dtype(np.float32)
    spec = {"mel": ((b, w * MELS_PER_FRAME, N_MELS), f32), "audio": ((b, w * SAMPLES_PER_FRAME), np.dtype(np.int16)),
            "pose": ((b, w, 3), f32), "mask": ((b, w), np.dtype(bool)), "clip": ((b,), np.dtype(np.int32)),
            "start": ((b,), np.dtype(np.int32))}
    spec.update({name: ((b, w * per_frame, *row), f32) for name, (row, per_frame) in extras.items()})
    return spec


class Memo:
    """Read-through memory of a random-access source (clip records, per-clip arrays), least recently used
    entries dropped beyond `budget_mb`. Why: a training window uses a few seconds of a clip but reading it
    parses the whole record (all its mel and audio) and maps its latents file; a 30-minute corpus' clips
    fit in ~200 MB, so each is read once per process instead of hundreds of times (11.6 -> 28.7 batches/s of
    speech2latent windows on one CPU core). Entries are copied into memory (whole, where a memory-mapped file's
    window would read only part: large per-frame features stay unwrapped), so no file mappings stay open; each
    Grain worker process holds its own memory, which starts empty (pickling drops it)."""

    def __init__(self, source: Any, budget_mb: float):
        self.source, self.budget = source, int(budget_mb * 2**20)
        self._entries: OrderedDict[int, Any] = OrderedDict()
        self._size, self._lock = 0, threading.Lock()

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Any:
        index = int(index)
        with self._lock:
            if index in self._entries:
                self._entries.move_to_end(index)
                return self._entries[index][0]
        value = self.source[index]
        value = {k: np.array(v) for k, v in value.items()} if isinstance(value, Mapping) else np.array(value)
        size = sum(v.nbytes for v in value.values()) if isinstance(value, dict) else value.nbytes
        with self._lock:
            if index not in self._entries and size <= self.budget:
                self._entries[index] = (value, size)
                self._size += size
                while self._size > self.budget:
                    self._size -= self._entries.popitem(last=False)[1][1]
        return value

    def __getstate__(self) -> dict:
        return {"source": self.source, "budget": self.budget}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["source"], state["budget"] / 2**20)


class _Window(grain.transforms.RandomMap):
    def __init__(self, frames: int, extras: Mapping[str, tuple[Mapping[int, np.ndarray], int]],
                 augment: SpeechAugment | None = None):
        self.frames, self.extras, self.augment = frames, extras, augment

    def random_map(self, ex: Mapping[str, Any], rng: np.random.Generator) -> dict[str, np.ndarray]:
        n, w = int(ex["n_frames"]), self.frames
        speed = self.augment.speed_factor(rng) if self.augment is not None else 1.0
        span = max(1, round(w * speed))   # frames of the clip that play in the window's w frames
        start = int(rng.integers(0, max(0, n - span) + 1))
        stop = min(n, start + span)

        def take(x: np.ndarray, per_frame: int) -> np.ndarray:   # zero-padded to the window
            x = np.asarray(x)[start * per_frame: stop * per_frame]
            out = np.zeros((span * per_frame, *x.shape[1:]), x.dtype)
            out[:len(x)] = x
            return resample_frames(out, w * per_frame)

        out = {"mel": take(ex["mel"], MELS_PER_FRAME), "audio": take(ex["audio"], SAMPLES_PER_FRAME),
               "pose": take(ex["pose"], 1), "mask": take(np.ones(n, bool), 1),
               "clip": np.int32(ex["clip"]), "start": np.int32(start)}
        for name, (arrays, per_frame) in self.extras.items():
            out[name] = take(arrays[int(ex["clip"])], per_frame)
        if self.augment is not None:   # the valid rows only: padding is not speech
            valid = int(out["mask"].sum()) * MELS_PER_FRAME
            out["mel"][:valid] = self.augment(out["mel"][:valid], rng, speed)
        return out


def sequence_dataset(data_dir: str, split: str, global_batch: int, window_frames: int, seed: int = 0, *,
                     shard: Shard = Shard(), extras: Mapping[str, tuple[Mapping[int, np.ndarray], int]] | None = None,
                     workers: int = 0, prefetch: int = 8, memory_mb: float = 512,
                     augment: SpeechAugment | None = None) -> grain.IterDataset:
    """Endless batches of random `window_frames`-frame windows: mel (B, 4W, 80), audio (B, 640W) int16,
    pose (B, W, 3), mask (B, W), and for each `extras` entry name -> (per-clip arrays keyed by clip index,
    rows per video frame) the aligned rows, e.g. "latents" (B, W, D) or "speech" (B, 2W, L, D).
    `memory_mb`: per process, for the decoded clip records (`Memo`); 0 reads every window anew. Extras are read
    as given (wrap small ones, e.g. latents, in a `Memo` too). `augment`: speech augmentation of the mel
    (`data/augment.py`; its speed perturbation resamples every per-frame entry of the window in time)."""
    source = data_source(data_dir, "clips", split)
    if memory_mb > 0:
        source = Memo(source, memory_mb)
    ds = _sharded(source, seed, shard, global_batch, _Window(window_frames, dict(extras or {}), augment))
    return _iterate(ds.batch(_local_batch(global_batch, shard), drop_remainder=True), workers, prefetch)


def to_global(batch: Mapping[str, np.ndarray], mesh, axis: str = "data") -> dict:
    """Per-process numpy batch -> global jax.Arrays, leading axis sharded over `axis` of `mesh`."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec(axis))
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}
