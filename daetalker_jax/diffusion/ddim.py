"""DDIM sampling (x_T -> x_0) and DDIM inversion (x_0 -> x_T, DiffAE's stochastic encoder), each one
`lax.scan` over the respaced timesteps, matching the official update: predict eps, form x0 and clip it
to [-1, 1], re-derive eps from the clipped x0, then step. eta > 0 adds the DDIM noise term.

`model_fn(x, t, z_sem)` takes (B, H, W, 3), (B,) int timesteps in 0..T-1 and (B, D) and returns what
the schedule says the denoiser predicts (epsilon for DiffAE, or v).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from daetalker_jax.diffusion.schedule import Schedule

ModelFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _x0_and_eps(model_fn: ModelFn, x: jax.Array, t: jax.Array, z: jax.Array, a_t: jax.Array, schedule: Schedule):
    x0, _ = schedule.x0_and_eps(model_fn(x, jnp.full((x.shape[0],), t, jnp.int32), z), x, a_t)
    x0 = jnp.clip(x0, -1, 1)
    return x0, (x / jnp.sqrt(a_t) - x0) / jnp.sqrt(1 / a_t - 1)


def sample(model_fn: ModelFn, x_T: jax.Array, z_sem: jax.Array, schedule: Schedule, steps: int, eta: float = 0.0,
           key: jax.Array | None = None) -> jax.Array:
    """x_T -> x_0 in `steps` DDIM steps (call under jax.jit; steps is static)."""
    kept = schedule.ddim_timesteps(steps)
    abar = jnp.asarray(schedule.alphas_cumprod[kept], jnp.float32)
    abar_prev = jnp.concatenate([jnp.ones(1), abar[:-1]])
    keys = jax.random.split(key if key is not None else jax.random.key(0), steps)
    deterministic = isinstance(eta, (int, float)) and eta == 0

    def body(x, inputs):
        t, a_t, a_prev, k, last = inputs
        x0, eps = _x0_and_eps(model_fn, x, t, z_sem, a_t, schedule)
        sigma = eta * jnp.sqrt((1 - a_prev) / (1 - a_t)) * jnp.sqrt(1 - a_t / a_prev)
        x = jnp.sqrt(a_prev) * x0 + jnp.sqrt(1 - a_prev - sigma**2) * eps
        if deterministic:   # no noise to draw (a full-size random array a step otherwise)
            return x, None
        return x + jnp.where(last, 0.0, sigma) * jax.random.normal(k, x.shape, x.dtype), None

    inputs = (jnp.asarray(kept[::-1], jnp.int32), abar[::-1], abar_prev[::-1], keys, jnp.arange(steps)[::-1] == 0)
    return jax.lax.scan(body, x_T.astype(jnp.float32), inputs)[0]


def invert(model_fn: ModelFn, x0: jax.Array, z_sem: jax.Array, schedule: Schedule, steps: int) -> jax.Array:
    """x_0 -> x_T by deterministic DDIM inversion over the same respaced timesteps (ascending); the
    last step lands on alpha_bar = 0, so x_T is the final re-derived eps."""
    kept = schedule.ddim_timesteps(steps)
    abar = jnp.asarray(schedule.alphas_cumprod[kept], jnp.float32)
    abar_next = jnp.concatenate([abar[1:], jnp.zeros(1)])

    def body(x, inputs):
        t, a_t, a_next = inputs
        x0_pred, eps = _x0_and_eps(model_fn, x, t, z_sem, a_t, schedule)
        return jnp.sqrt(a_next) * x0_pred + jnp.sqrt(1 - a_next) * eps, None

    return jax.lax.scan(body, x0.astype(jnp.float32), (jnp.asarray(kept, jnp.int32), abar, abar_next))[0]
