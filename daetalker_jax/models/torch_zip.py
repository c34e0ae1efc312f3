"""Reads `torch.save` files (the zip format of PyTorch >= 1.6) as numpy, without torch.

Such a file is a zip of `data.pkl` (the pickled object, tensors as persistent references) and one raw
little-endian `data/<key>` entry per storage. Unpickling arbitrary globals can run arbitrary code, so
only the few globals tensors need (rebuild functions, storage types, OrderedDict) are real; any other is
refused, or, for checkpoints of training frameworks (a Lightning `.ckpt` keys its callbacks by class),
replaced by an inert stand-in that holds what the pickle gives it and runs nothing.
"""

from __future__ import annotations

import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from daetalker_jax.errors import UserError

SAFETENSORS_DTYPES = {"F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
                      "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
                      "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?")}
TORCH_STORAGES = {"DoubleStorage": "F64", "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16",
                  "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16", "CharStorage": "I8",
                  "ByteStorage": "U8", "BoolStorage": "BOOL"}


def _rebuild_tensor_v2(storage: np.ndarray, offset: int, size: tuple, stride: tuple, *_) -> np.ndarray:
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *_) -> np.ndarray:
    return data


class _StorageType:
    """Stands in for a torch.*Storage class in the pickle: only its element type matters."""

    def __init__(self, name: str):
        self.dtype = SAFETENSORS_DTYPES[TORCH_STORAGES[name]]


class Foreign:
    """Base of the stand-ins for another library's classes and functions: called or rebuilt with any
    arguments and state, it keeps them and does nothing."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    _GLOBALS = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
                ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
                ("collections", "OrderedDict"): OrderedDict}

    def __init__(self, file, archive: zipfile.ZipFile, root: str, foreign: bool):
        super().__init__(file)
        self.archive, self.root, self.foreign = archive, root, foreign
        self.storages: dict[str, np.ndarray] = {}
        self.stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[module, name]
        if module == "torch" and name in TORCH_STORAGES:
            return _StorageType(name)
        if not self.foreign:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a state dict needs only tensors")
        key = (module, name)
        if key not in self.stand_ins:   # one class per name, so that a class used as a dict key stays one key
            self.stand_ins[key] = type(name, (Foreign,), {"__module__": module})
        return self.stand_ins[key]

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if key not in self.storages:
            raw = self.archive.read(f"{self.root}data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=storage_type.dtype, count=numel)
        return self.storages[key]


def read_torch_zip(path: Path, *, foreign: bool = False) -> Any:
    """The object `torch.save` wrote to `path`, its tensors as numpy arrays. `foreign`: stand in for other
    globals (see `Foreign`) instead of refusing them."""
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a zip-format PyTorch file (legacy pre-1.6 format, or not PyTorch at all?); "
                        "re-save it with torch >= 1.6")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkl) != 1:
            raise UserError(f"{path} has no single data.pkl; is it a file torch.save wrote?")
        root = pkl[0][:-len("data.pkl")]
        if f"{root}byteorder" in archive.namelist() and archive.read(f"{root}byteorder") != b"little":
            raise UserError(f"{path} was saved on a big-endian machine; re-save it on a little-endian one")
        with archive.open(pkl[0]) as f:
            try:
                return _Unpickler(f, archive, root, foreign).load()
            except (pickle.UnpicklingError, KeyError, ValueError) as e:
                raise UserError(f"{path} cannot be read: {e}") from e
