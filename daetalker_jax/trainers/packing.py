"""How the train state crosses the jitted step's boundary: as one flat buffer per dtype, or as a leaf list.

Why: the step's host cost grows with its number of arguments and results. On an H200 the reference DiffAE
(1,814 state + 604 EMA leaves) took 46.9 ms a step called with leaf lists and 30.7 ms with packed buffers, its
GPU work being less than either (bench/RESULTS.md). Packing is a concatenation inside the step, written into the
donated buffers, and unpacking is slices. On the CPU backend, where the step's compute dwarfs its dispatch, the
slices doubled XLA's compile time (27 -> 51 s for `configs/dae.py:tiny`), so `pack_state="auto"` packs on
accelerators only.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from daetalker_jax.errors import UserError


def packs(config: ml_collections.ConfigDict) -> bool:
    """The trainer option `pack_state`: "auto" (on GPU/TPU, not on the CPU backend), "on" or "off"."""
    mode = config.get("pack_state", "auto")
    if mode not in ("auto", "on", "off"):
        raise UserError(f"--config.pack_state must be auto, on or off, got {mode!r}")
    return mode == "on" or (mode == "auto" and jax.default_backend() != "cpu")


def packings(config: ml_collections.ConfigDict, *trees: Any) -> tuple[Packing, ...]:
    """One `Packing` per tree (train state, EMA), flat or not as `pack_state` says."""
    flat = packs(config)
    return tuple(Packing(t, flat) for t in trees)


class Packing:
    """A pytree of fixed structure <-> the step's arguments: 1-D buffers, one per dtype (flat=True), or its
    leaves."""

    def __init__(self, tree: Any, flat: bool = True):
        leaves, self.treedef = jax.tree.flatten(tree)
        self.flat = flat
        self.shapes = [tuple(x.shape) for x in leaves]
        self.leaf_dtypes = [jnp.dtype(x.dtype) for x in leaves]
        self.dtypes = sorted(set(self.leaf_dtypes), key=str)
        self._where = []   # per leaf: (buffer index, offset, size)
        sizes = [0] * len(self.dtypes)
        for dtype, shape in zip(self.leaf_dtypes, self.shapes):
            b, n = self.dtypes.index(dtype), int(np.prod(shape, dtype=np.int64))
            self._where.append((b, sizes[b], n))
            sizes[b] += n
        self.sizes = sizes

    def pack(self, tree: Any) -> list[jax.Array]:
        """Works traced (inside the step) and on concrete arrays."""
        leaves = self.treedef.flatten_up_to(tree)
        if not self.flat:
            return list(leaves)
        parts: list[list[jax.Array]] = [[] for _ in self.dtypes]
        for x, (b, _, _) in zip(leaves, self._where):
            parts[b].append(jnp.ravel(x))
        return [jnp.concatenate(p) for p in parts]

    def unpack(self, buffers: list[jax.Array]) -> Any:
        if not self.flat:
            return self.treedef.unflatten(buffers)
        leaves = [jax.lax.slice(buffers[b], (o,), (o + n,)).reshape(shape)
                  for (b, o, n), shape in zip(self._where, self.shapes)]
        return self.treedef.unflatten(leaves)

    def specs(self, sharding: jax.sharding.Sharding) -> list[jax.ShapeDtypeStruct]:
        """The arguments' shapes, for compiling without values."""
        if not self.flat:
            return [jax.ShapeDtypeStruct(s, d, sharding=sharding) for s, d in zip(self.shapes, self.leaf_dtypes)]
        return [jax.ShapeDtypeStruct((n,), d, sharding=sharding) for n, d in zip(self.sizes, self.dtypes)]
