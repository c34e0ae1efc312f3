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
        """The kept timesteps for `steps` DDIM steps (any count from 1 to T), ascending. Where an integer
        stride gives exactly that many, official "ddimN" respacing: {0, s, 2s, ...} with the smallest such
        stride s (N=20 -> stride 50: 0, 50, ..., 950); otherwise the fractional stride of guided diffusion's
        `space_timesteps`: round(i (T - 1) / (N - 1)), i = 0..N-1 (N=600: 0, 2, 3, 5, ...)."""
        check_steps(steps, self.num_timesteps)
        for stride in range(1, self.num_timesteps + 1):
            kept = np.arange(0, self.num_timesteps, stride)
            if len(kept) == steps:
                return kept
            if len(kept) < steps:
                break
        return np.round(np.arange(steps) * (self.num_timesteps - 1) / (steps - 1)).astype(np.int64)


def run_timesteps(workdir) -> int:
    """The diffusion's T of a DiffAE training run folder, read from its config.json (no checkpoint loaded)."""
    import json
    from pathlib import Path

    return int(json.loads((Path(workdir) / "config.json").read_text()).get("diffusion_steps", 1000))


def check_steps(steps: int, num_timesteps: int = 1000, name: str = "--steps") -> int:
    """A DDIM step count: any integer from 1 to the diffusion's T; a clear error otherwise."""
    if isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= num_timesteps:
        from daetalker_jax.errors import UserError

        raise UserError(f"{name} must be a whole number of DDIM steps from 1 to {num_timesteps} (the diffusion's "
                        f"T), got {steps}")
    return int(steps)
