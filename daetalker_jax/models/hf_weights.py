"""Torch-free readers for local Hugging Face checkpoint folders (config.json + weights).

Weights come from `model.safetensors` or, failing that, the older `pytorch_model.bin` (PyTorch's zip
format, read by `torch_zip`), each possibly sharded with an `.index.json`.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from daetalker_jax.errors import UserError
from daetalker_jax.models.torch_zip import SAFETENSORS_DTYPES, read_torch_zip

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
_LFS_POINTER = b"version https://git-lfs"


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); download it again") from e


def load_config(folder: str | Path) -> dict:
    """The folder's config.json as a dict."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder {folder} does not exist; pass a local Hugging Face model folder "
                        "(config.json + model.safetensors or pytorch_model.bin)")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json; pass the whole Hugging Face model folder "
                        "(as written by save_pretrained or downloaded from the hub)")
    return read_json(folder / "config.json")


def load_state_dict(folder: str | Path) -> dict[str, np.ndarray]:
    """All tensors of the folder's checkpoint, by their PyTorch names, in their stored dtypes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"checkpoint folder {folder} does not exist; pass a local Hugging Face model folder")
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        read = read_safetensors if name.startswith("model.safetensors") else read_torch_bin
        if not name.endswith(".index.json"):
            return read(path)
        shards = sorted(set(read_json(path).get("weight_map", {}).values()))
        if not shards:
            raise UserError(f"{path} has no weight_map; download the checkpoint again")
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            if not (folder / shard).is_file():
                raise UserError(f"{path} lists the shard {shard}, which is missing from {folder}; download it")
            state |= read(folder / shard)
        return state
    found = ", ".join(sorted(p.name for p in folder.iterdir())) or "nothing"
    raise UserError(f"{folder} has no PyTorch weights ({' or '.join(WEIGHT_FILES[::2])}); found: {found}. "
                    "Save them with model.save_pretrained(folder) or download them from the hub")


def _check_not_lfs_pointer(path: Path, head: bytes) -> None:
    if head.startswith(_LFS_POINTER):
        raise UserError(f"{path} is a Git LFS pointer, not the weights; run `git lfs pull` in its repository")


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A .safetensors file: u64 little-endian header size, JSON header, then raw little-endian tensor data."""
    with open(path, "rb") as f:
        head = f.read(8)
        _check_not_lfs_pointer(path, head + f.read(len(_LFS_POINTER) - 8))
        f.seek(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        if not 0 < size <= path.stat().st_size - 8:
            raise UserError(f"{path} is not a safetensors file (bad header size); download it again")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path} has a corrupt safetensors header ({e}); download it again") from e
    has_data = path.stat().st_size > 8 + size
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + size) if has_data else np.zeros(0, np.uint8)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise UserError(f"{path}: tensor {name} has dtype {info['dtype']}, which this reader does not support "
                            f"({', '.join(SAFETENSORS_DTYPES)}); convert the checkpoint to float32")
        begin, end = info["data_offsets"]
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        if end > data.size or end - begin != dtype.itemsize * int(np.prod(info["shape"])):
            raise UserError(f"{path}: tensor {name} lies outside the file or has the wrong size; download it again")
        out[name] = np.array(data[begin:end].view(dtype).reshape(info["shape"]))
    return out


def read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    """A `torch.save`d state dict (zip format of PyTorch >= 1.6), without torch."""
    with open(path, "rb") as f:
        _check_not_lfs_pointer(path, f.read(len(_LFS_POINTER)))
    state = read_torch_zip(path)
    if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
        raise UserError(f"{path} is not a plain state dict of tensors; convert it to model.safetensors")
    return dict(state)
