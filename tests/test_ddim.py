"""DDIM sampler and inverter against denoisers whose exact answer is known."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from daetalker_jax.diffusion import ddim
from daetalker_jax.diffusion.schedule import Schedule

S = Schedule()
ABAR = jnp.asarray(S.alphas_cumprod, jnp.float32)


def test_respacing_matches_official_ddim_n():
    np.testing.assert_array_equal(S.ddim_timesteps(20), np.arange(0, 1000, 50))
    np.testing.assert_array_equal(S.ddim_timesteps(100), np.arange(0, 1000, 10))
    assert len(S.ddim_timesteps(250)) == 250 and S.ddim_timesteps(250)[1] == 4
    assert abs(S.alphas_cumprod[0] - (1 - 1e-4)) < 1e-12


def _point_mass(target):
    def eps_fn(x, t, z):   # the exact eps when the data is the single image `target`
        a = ABAR[t][:, None, None, None]
        return (x - jnp.sqrt(a) * target) / jnp.sqrt(1 - a)
    return eps_fn


def test_sampling_and_inversion_are_exact_for_a_point_mass():
    target = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3), minval=-0.9, maxval=0.9)
    eps_fn = _point_mass(target)
    x_T = jax.random.normal(jax.random.key(2), target.shape)
    for steps in (10, 20):
        out = jax.jit(lambda x: ddim.sample(eps_fn, x, None, S, steps))(x_T)
        assert float(jnp.abs(out - target).max()) < 1e-5
        inv = jax.jit(lambda x: ddim.invert(eps_fn, x, None, S, steps))(target)
        rec = jax.jit(lambda x: ddim.sample(eps_fn, x, None, S, steps))(inv)
        assert float(jnp.abs(rec - target).max()) < 1e-5


def test_v_prediction_is_the_same_process():
    """A v denoiser that is exact for a point mass samples and inverts it exactly too, and the v target
    maps back to the (x0, eps) it was made from."""
    V = Schedule(prediction="v")
    target = jax.random.uniform(jax.random.key(1), (2, 8, 8, 3), minval=-0.9, maxval=0.9)
    eps_fn = _point_mass(target)

    def v_fn(x, t, z):
        a = ABAR[t][:, None, None, None]
        return jnp.sqrt(a) * eps_fn(x, t, z) - jnp.sqrt(1 - a) * target

    x_T = jax.random.normal(jax.random.key(2), target.shape)
    out = jax.jit(lambda x: ddim.sample(v_fn, x, None, V, 10))(x_T)
    assert float(jnp.abs(out - target).max()) < 1e-5
    rec = jax.jit(lambda x: ddim.sample(v_fn, ddim.invert(v_fn, x, None, V, 10), None, V, 10))(target)
    assert float(jnp.abs(rec - target).max()) < 1e-5
    t = jnp.array([0, 999])
    noise = jax.random.normal(jax.random.key(3), target.shape)
    x_t = V.q_sample(target, t, noise)
    x0, eps = V.x0_and_eps(V.target(target, t, noise), x_t, ABAR[t][:, None, None, None])
    np.testing.assert_allclose(x0, target, atol=2e-5)
    np.testing.assert_allclose(eps, noise, atol=2e-5)
    with np.testing.assert_raises(ValueError):
        Schedule(prediction="x0")


def test_eta_zero_and_one_both_sample_the_gaussian_data_distribution():
    """Data ~ N(0, 0.3^2): eps*(x_t) = x_t sqrt(1 - a) / (a 0.09 + 1 - a). With all 1000 steps both the
    deterministic (eta=0) and the stochastic (eta=1) sampler must return std 0.3 (within 2%)."""
    def eps_fn(x, t, z):
        a = ABAR[t][:, None, None, None]
        return x * jnp.sqrt(1 - a) / (a * 0.09 + 1 - a)

    x_T = jax.random.normal(jax.random.key(0), (4096, 2, 2, 3))
    for eta in (0.0, 1.0):
        out = jax.jit(lambda x: ddim.sample(eps_fn, x, None, S, 1000, eta=eta, key=jax.random.key(1)))(x_T)
        assert abs(float(out.std()) - 0.3) < 0.006, (eta, float(out.std()))
    a = jax.jit(lambda x: ddim.sample(eps_fn, x, None, S, 50, eta=1.0, key=jax.random.key(1)))(x_T)
    b = jax.jit(lambda x: ddim.sample(eps_fn, x, None, S, 50, eta=1.0, key=jax.random.key(2)))(x_T)
    c = jax.jit(lambda x: ddim.sample(eps_fn, x, None, S, 50, eta=0.0, key=jax.random.key(2)))(x_T)
    d = jax.jit(lambda x: ddim.sample(eps_fn, x, None, S, 50, eta=0.0, key=jax.random.key(3)))(x_T)
    assert float(jnp.abs(a - b).max()) > 0.01 and float(jnp.abs(c - d).max()) == 0   # only eta > 0 is random

    def traced(eta: float) -> str:
        return str(jax.make_jaxpr(lambda x: ddim.sample(eps_fn, x, None, S, 5, eta=eta))(x_T))

    assert "random_bits" in traced(1.0) and "random_bits" not in traced(0.0)   # eta = 0 draws no noise at all


def test_clipping_keeps_samples_in_range():
    def eps_fn(x, t, z):   # a denoiser that points far outside [-1, 1]
        a = ABAR[t][:, None, None, None]
        return (x - jnp.sqrt(a) * 5.0) / jnp.sqrt(1 - a)
    out = ddim.sample(eps_fn, jax.random.normal(jax.random.key(0), (1, 4, 4, 3)), None, S, 10)
    assert float(jnp.abs(out).max()) <= 1.0 + 1e-6
