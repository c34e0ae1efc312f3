"""The DiffAE diffusion process: linear betas, T = 1000, epsilon prediction, and DDIM respacing."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Schedule:
    """alphas_cumprod of the linear beta schedule (official DiffAE: betas in [1e-4, 0.02] * 1000 / T)."""
    num_timesteps: int = 1000

    @property
    def alphas_cumprod(self) -> np.ndarray:
        scale = 1000 / self.num_timesteps
        betas = np.linspace(scale * 1e-4, scale * 0.02, self.num_timesteps, dtype=np.float64)
        return np.cumprod(1.0 - betas)

    def q_sample(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t of shape (B,)."""
        abar = jnp.asarray(self.alphas_cumprod, jnp.float32)[t][:, None, None, None]
        return jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * noise

    def ddim_timesteps(self, steps: int) -> np.ndarray:
        """The kept timesteps of official "ddimN" respacing, ascending: {0, s, 2s, ...} with the smallest
        integer stride s giving exactly `steps` of them (N=20 -> stride 50: 0, 50, ..., 950)."""
        for stride in range(1, self.num_timesteps + 1):
            kept = np.arange(0, self.num_timesteps, stride)
            if len(kept) == steps:
                return kept
        raise ValueError(f"cannot respace {self.num_timesteps} timesteps into exactly {steps} DDIM steps")
