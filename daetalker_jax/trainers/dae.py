"""Stage 1: the diffusion autoencoder. Encoder and UNet train jointly with the epsilon-MSE loss only
(uniform t in 0..T-1, x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, z_sem = Enc(x0)), as in DiffAE; with
`prediction = "v"` the MSE is on v instead (the CPU configuration, see diffusion/schedule.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from daetalker_jax.data import pipeline
from daetalker_jax.diffusion import ddim
from daetalker_jax.diffusion.schedule import Schedule, check_steps
from daetalker_jax.errors import UserError
from daetalker_jax.metrics.fidelity import psnr
from daetalker_jax.models.unet import DiffAE, DiffAEConfig


def to_unit_range(image: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return image.astype(jnp.float32) / 127.5 - 1


def to_uint8(x: jax.Array) -> np.ndarray:
    return np.asarray(jnp.clip((x + 1) * 127.5 + 0.5, 0, 255)).astype(np.uint8)


def mouth_weight_map(size: int, weight: float) -> jax.Array:
    """(size, size, 1) loss weights: `weight` on the lower-middle of the face crop (rows 1/2..7/8, columns
    1/4..3/4, where prepare's face crops with margin 1.2 put the mouth), 1 elsewhere. DiffAE's loss is the
    plain mean (1.0). Why: the mouth is a few percent of the pixels, so a short run learns the face and head
    pose first and leaves the mouth to x_T; with weight 30 a 32 px model renders the mouth from z after
    2,000-3,000 steps (decoded held-out latents: probe r 0.65-0.82 vs 0.13 unweighted)."""
    box = jnp.zeros((size, size, 1)).at[size // 2:size * 7 // 8, size // 4:size * 3 // 4].set(1.0)
    return 1.0 + (weight - 1.0) * box


class DAETask:
    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.model_config = DiffAEConfig(**{k: tuple(v) if isinstance(v, list | tuple) else v
                                            for k, v in config.model.items()})
        self.schedule = Schedule.of(config)
        for name in ("sample_steps", "invert_steps"):   # refused at start, not at the first sample grid
            check_steps(config[name], config.diffusion_steps, f"--config.{name}")

    def build_model(self, rngs: nnx.Rngs) -> DiffAE:
        return DiffAE(self.model_config, rngs=rngs)

    def initialize(self, model: DiffAE) -> None:
        """Nothing depends on the data: a fresh DiffAE starts from its initialisers (or `init_from`)."""

    def dataset(self, shard: pipeline.Shard):
        c = self.config
        size = pipeline.frame_size(c.data_dir, c.split)   # the convolutional UNet would train on any size,
        if size not in (None, c.model.image_size):          # with attention at the wrong levels
            raise UserError(f"{c.data_dir} holds {size}px frames but this DiffAE config is {c.model.image_size}px; "
                            f"use a config of that size or prepare the data with --size {c.model.image_size}")
        return pipeline.frame_dataset(c.data_dir, c.split, c.batch_size, seed=c.seed, shard=shard,
                                      augment=c.augment, workers=c.data_workers)

    def batch_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The global batch's shapes, known from the config alone (see `trainers.base.compile_step`)."""
        return pipeline.frame_batch_spec(self.config.batch_size, self.config.model.image_size)

    def loss(self, model: DiffAE, batch: dict[str, jax.Array], key: jax.Array,
             sharding: jax.sharding.Sharding) -> tuple[jax.Array, dict]:
        """`sharding` is the batch's: noise and t drawn in the step are sharded like the data."""
        x0 = to_unit_range(batch["image"])
        k_t, k_noise = jax.random.split(key)
        t = jax.lax.with_sharding_constraint(
            jax.random.randint(k_t, (x0.shape[0],), 0, self.schedule.num_timesteps), sharding)
        noise = jax.lax.with_sharding_constraint(jax.random.normal(k_noise, x0.shape), sharding)
        out = model(self.schedule.q_sample(x0, t, noise), t, model.encode(x0))
        weight = mouth_weight_map(x0.shape[1], self.config.get("mouth_weight", 1.0))
        return jnp.mean(weight * (out - self.schedule.target(x0, t, noise)) ** 2), {}

    def samples(self, ema_model: DiffAE, batch: dict[str, jax.Array], key: jax.Array
                ) -> tuple[np.ndarray, dict[str, float]]:
        """Rows: originals; EMA reconstructions from z_sem + DDIM-inverted x_T; from z_sem + one shared
        random x_T (DAE-Talker's setting). Scalars: the PSNR of both reconstructions."""
        c = self.config
        x0 = to_unit_range(batch["image"][: c.sample_count])
        graphdef, state = nnx.split(ema_model)

        @jax.jit
        def run(state, x0, key):
            model = nnx.merge(graphdef, state)
            z = model.encode(x0)
            x_T = ddim.invert(model, x0, z, self.schedule, c.invert_steps)
            shared = jnp.broadcast_to(jax.random.normal(key, x0.shape[1:]), x0.shape)
            return (ddim.sample(model, x_T, z, self.schedule, c.sample_steps),
                    ddim.sample(model, shared, z, self.schedule, c.sample_steps))

        inverted, shared = run(state, x0, key)
        rows = [to_uint8(r) for r in (x0, inverted, shared)]
        grid = np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
        return grid, {"sample/psnr_inverted": psnr(rows[0], rows[1]), "sample/psnr_shared_xT": psnr(rows[0], rows[2])}
