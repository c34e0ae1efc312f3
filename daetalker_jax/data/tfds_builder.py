"""The prepared dataset as a TFDS builder writing ArrayRecord files, built without TensorFlow.

Two configs of one versioned dataset `daetalker_data`, each with the corpus' splits:
  frames: one record per video frame (JPEG, clip index, frame index, pose) for the DiffAE;
  clips:  one record per clip (16 kHz int16 audio, 100 Hz log-mel, pose, frame count) for speech2latent.
Read anywhere with `tfds.data_source("daetalker_data/frames", data_dir=..., split="train")`.
The examples come from the per-clip cache that `prepare` writes (see data/prepare.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

N_MELS = 80
MELS_PER_FRAME = 4
# Arrays as raw bytes: TFDS's default turns each element into a protobuf list entry in Python (8.6 of the 20 s
# it took to write a 30-minute corpus on one core).
BYTES = tfds.features.Encoding.BYTES


class DaetalkerData(tfds.core.GeneratorBasedBuilder):
    """A talking-head corpus prepared by `python -m daetalker_jax.prepare`."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Frames (JPEG) and per-clip audio, log-mel and head pose.",
                     "1.1.0": "Arrays stored as raw bytes (the same values; writing 2x faster). 1.0.0 still reads."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="frames", description="one record per 25 fps video frame"),
        tfds.core.BuilderConfig(name="clips", description="one record per clip: audio, mel, pose"),
    ]

    def __init__(self, *, cache_dir: str | Path | None = None, splits: dict[str, list[str]] | None = None,
                 size: int | None = None, **kwargs):
        self._cache_dir = Path(cache_dir) if cache_dir else None
        self._splits = splits or {}
        self._size = size
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        if self.builder_config.name == "frames":
            features = tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(self._size, self._size, 3), encoding_format="jpeg"),
                "clip": np.int32, "frame": np.int32,
                "pose": tfds.features.Tensor(shape=(3,), dtype=np.float32, encoding=BYTES),
            })
        else:
            features = tfds.features.FeaturesDict({
                "clip_id": tfds.features.Text(), "clip": np.int32, "n_frames": np.int32,
                "audio": tfds.features.Tensor(shape=(None,), dtype=np.int16, encoding=BYTES),
                "mel": tfds.features.Tensor(shape=(None, N_MELS), dtype=np.float32, encoding=BYTES),
                "pose": tfds.features.Tensor(shape=(None, 3), dtype=np.float32, encoding=BYTES),
            })
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features,
                                     metadata=tfds.core.MetadataDict(size=self._size))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(ids) for split, ids in self._splits.items() if ids}

    def _generate_examples(self, clip_ids: list[str]):
        from daetalker_jax.data.clip_cache import load_clip  # the cache format lives with prepare

        for clip_index, clip_id in enumerate(clip_ids):
            clip = load_clip(self._cache_dir, clip_id)
            index = clip.meta["index"]
            if self.builder_config.name == "frames":
                for k, jpeg in enumerate(clip.jpegs()):
                    yield f"{clip_id}/{k:06d}", {"image": jpeg, "clip": index, "frame": k, "pose": clip.pose[k]}
            else:
                yield clip_id, {"clip_id": clip_id, "clip": index, "n_frames": len(clip.pose),
                                "audio": clip.audio, "mel": clip.mel, "pose": clip.pose}


def write_dataset(data_dir: Path, cache_dir: Path, splits: dict[str, list[str]], size: int) -> None:
    """Builds both configs from the cache (overwriting an earlier build of the same version)."""
    for config in ("frames", "clips"):
        builder = DaetalkerData(config=config, data_dir=str(data_dir), file_format="array_record",
                                cache_dir=cache_dir, splits=splits, size=size)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            max_shard_size=256 << 20, try_download_gcs=False,
            download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD))
    (Path(data_dir) / "daetalker_data" / "splits.json").write_text(json.dumps(splits, indent=1))
