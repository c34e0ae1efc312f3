"""Per-clip arrays derived from a prepared dataset and stored beside it: the frozen encoder's latents
(`extract --dae`) and precomputed speech-encoder features (`extract --speech-model`).

Layout: DATA_DIR/daetalker_data/derived/<name>/clip_000123.npy (one array per clip index, frame-major)
plus meta.json (what made them, statistics). Reads are memory-mapped, so Grain worker processes share
the page cache instead of each holding a copy; writes are atomic, so an interrupted extraction never
leaves a truncated array behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from daetalker_jax.data.pipeline import DATASET
from daetalker_jax.errors import UserError, atomic_path


class ClipArrays:
    def __init__(self, data_dir: str | Path, name: str):
        self.name = name
        self.dir = Path(data_dir) / DATASET / "derived" / name

    def path(self, clip: int) -> Path:
        return self.dir / f"clip_{clip:06d}.npy"

    def has(self, clip: int) -> bool:
        return self.path(clip).exists()

    def write(self, clip: int, array: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(clip)) as tmp, open(tmp, "wb") as f:
            np.save(f, array)

    def __getitem__(self, clip: int) -> np.ndarray:
        try:
            return np.load(self.path(int(clip)), mmap_mode="r")
        except FileNotFoundError:
            raise UserError(f"{self.name} of clip {clip} are missing in {self.dir}; run "
                            "`python -m daetalker_jax.extract` for this dataset first") from None

    @property
    def meta(self) -> dict[str, Any]:
        path = self.dir / "meta.json"
        if not path.exists():
            raise UserError(f"no {self.name} in {self.dir.parent.parent.parent}: run "
                            "`python -m daetalker_jax.extract` on this dataset first")
        return json.loads(path.read_text())

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=1))
