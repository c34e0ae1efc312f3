"""The DiffAE diffusion process: linear betas, T = 1000, what the denoiser predicts, and DDIM respacing.

DiffAE predicts epsilon. The `v` option (Salimans & Ho 2022, v = sqrt(abar) eps - sqrt(1 - abar) x0) is
for short training budgets: at high noise an epsilon model's x0 estimate divides its error by
sqrt(abar) (~150x at t = 999), so decoding from a random x_T needs a very accurate epsilon, whereas a v model
predicts x0 directly there and decodes from random noise after far fewer steps."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


PREDICTIONS = ("eps", "v")


@dataclass(frozen=True)
class Schedule:
    """alphas_cumprod of the linear beta schedule (official DiffAE: betas in [1e-4, 0.02] * 1000 / T)."""
    num_timesteps: int = 1000
    prediction: str = "eps"    # what the denoiser outputs: "eps" (DiffAE) or "v"

    def __post_init__(self):
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")

    @classmethod
    def of(cls, config) -> Schedule:
        """The schedule a DiffAE config trains with (runs saved before `prediction` existed used eps)."""
        return cls(config.diffusion_steps, config.get("prediction", "eps"))

    @property
    def alphas_cumprod(self) -> np.ndarray:
        scale = 1000 / self.num_timesteps
        betas = np.linspace(scale * 1e-4, scale * 0.02, self.num_timesteps, dtype=np.float64)
        return np.cumprod(1.0 - betas)

    def _abar(self, t: jax.Array) -> jax.Array:
        """alpha_bar at per-example timesteps (B,), shaped to broadcast over (B, H, W, C)."""
        return jnp.asarray(self.alphas_cumprod, jnp.float32)[t][:, None, None, None]

    def q_sample(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, t of shape (B,)."""
        abar = self._abar(t)
        return jnp.sqrt(abar) * x0 + jnp.sqrt(1 - abar) * noise

    def target(self, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
        """The denoiser's regression target for x_t = q_sample(x0, t, noise)."""
        if self.prediction == "eps":
            return noise
        abar = self._abar(t)
        return jnp.sqrt(abar) * noise - jnp.sqrt(1 - abar) * x0

    def x0_and_eps(self, output: jax.Array, x_t: jax.Array, abar: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(x0, eps) implied by the denoiser's output at x_t, where alpha_bar = abar (unclipped)."""
        if self.prediction == "eps":
            return (x_t - jnp.sqrt(1 - abar) * output) / jnp.sqrt(abar), output
        return jnp.sqrt(abar) * x_t - jnp.sqrt(1 - abar) * output, jnp.sqrt(abar) * output + jnp.sqrt(1 - abar) * x_t

    def ddim_timesteps(self, steps: int) -> np.ndarray:
        """The kept timesteps of official "ddimN" respacing, ascending: {0, s, 2s, ...} with the smallest
        integer stride s giving exactly `steps` of them (N=20 -> stride 50: 0, 50, ..., 950)."""
        for stride in range(1, self.num_timesteps + 1):
            kept = np.arange(0, self.num_timesteps, stride)
            if len(kept) == steps:
                return kept
        raise ValueError(f"cannot respace {self.num_timesteps} timesteps into exactly {steps} DDIM steps")
