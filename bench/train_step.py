"""Shared by bench/dae.py (timing) and bench/kernel_time.py (profiling): the DiffAE training step exactly as the
Trainer runs it (trainers.base.train_step on packed state leaves, donated), compiled on random images, so that the
speed and the profile are of the same program."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from daetalker_jax.flops import count_flops
from daetalker_jax.trainers.base import train_step
from daetalker_jax.trainers.dae import DAETask
from daetalker_jax.trainers.packing import packings


def compile_counted(jitted, *args):
    """Compiles once; returns the executable, the FLOPs of one call (counted from the jaxpr) and the compile
    seconds (XLA's autotuning included: it is most of a training run's start-up)."""
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    return compiled, count_flops(jitted, *args), time.perf_counter() - start


class TrainStep:
    """`step(i)` runs training step i on one fixed random batch of `batch` images and returns its loss;
    `flops` / `compile_s` describe the compiled step; `model()` gives the trained model back (the one passed in
    was donated to the first step)."""

    def __init__(self, config, task: DAETask, model: nnx.Module, optimizer: nnx.Optimizer, batch: int, mesh: Mesh):
        replicated, sharded = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))
        self.graphdef, rng_state, state = nnx.split((model, optimizer), nnx.RngState, ...)
        ema = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
        state, ema, self.rng_state = jax.device_put((state, ema, rng_state), replicated)
        size = config.model.image_size
        images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), np.uint8)
        self.batch = {"image": jax.device_put(images, sharded)}
        jitted = train_step(self.graphdef, (state, ema, self.rng_state), config, task, mesh)
        self.packing, ema_packing = packings(config, state, ema)
        self.leaves = [jax.jit(self.packing.pack, out_shardings=replicated)(state),
                       jax.jit(ema_packing.pack, out_shardings=replicated)(ema), jax.tree.leaves(self.rng_state)]
        self.compiled, self.flops, self.compile_s = compile_counted(jitted, *self.leaves, self.batch, jnp.int32(0))

    def __call__(self, i: int) -> jax.Array:
        self.leaves[0], self.leaves[1], metrics = self.compiled(*self.leaves, self.batch, jnp.int32(i))
        return metrics["loss"]

    def model(self) -> nnx.Module:
        model, _ = nnx.merge(self.graphdef, self.rng_state, self.packing.unpack(self.leaves[0]))
        return model
