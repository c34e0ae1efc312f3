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


def _kept(steps: int) -> np.ndarray:
    """Respacing written out independently: an integer stride where one gives exactly `steps` (official ddimN),
    else guided diffusion's fractional stride."""
    exact = [np.arange(0, 1000, s) for s in range(1, 1001) if len(range(0, 1000, s)) == steps]
    return exact[0] if exact else np.array([round(i * 999 / (steps - 1)) for i in range(steps)])


def test_every_step_count_from_1_to_T_respaces():
    for steps in range(1, 1001):
        kept = S.ddim_timesteps(steps)
        assert len(kept) == steps and np.all(np.diff(kept) > 0) and kept[0] == 0 and kept[-1] <= 999, steps
    for steps in (37, 41, 99, 600, 999):   # no integer stride gives these
        np.testing.assert_array_equal(S.ddim_timesteps(steps), _kept(steps))
    from daetalker_jax.errors import UserError

    for bad in (0, 1001, -3, 2.5):
        with np.testing.assert_raises(UserError):
            S.ddim_timesteps(bad)


SIGMA = 2.0   # data ~ N(0, SIGMA^2) per pixel: the exact denoiser is known in closed form; x0 estimates often
#               leave [-1, 1], so the official clipping is exercised


def _gaussian_eps(x, t, z=None):
    a = ABAR[t][:, None, None, None] if np.ndim(t) else ABAR[t]
    return x * jnp.sqrt(1 - a) / (a * SIGMA**2 + 1 - a)


def _numpy_ddim(x, kept, direction: str, eta: float = 0.0, noises=None):
    """The DDIM equations in float64 NumPy (Song et al. 2021, eq. 12; the official x0 clipping to [-1, 1] and eps
    re-derived from it): direction "sample" walks kept descending to alpha_bar_prev = 1, "invert" ascending to 0."""
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    x, clipped = np.asarray(x, np.float64), 0
    ts = kept[::-1] if direction == "sample" else kept
    for i, t in enumerate(ts):
        a = abar[t]
        a_to = (abar[ts[i + 1]] if i + 1 < len(ts) else 1.0) if direction == "sample" else \
            (abar[ts[i + 1]] if i + 1 < len(ts) else 0.0)
        eps = x * np.sqrt(1 - a) / (a * SIGMA**2 + 1 - a)
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        clipped += int(np.sum(np.abs(x0) > 1))
        x0 = np.clip(x0, -1, 1)
        eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        sigma = eta * np.sqrt((1 - a_to) / (1 - a)) * np.sqrt(1 - a / a_to) if direction == "sample" else 0.0
        x = np.sqrt(a_to) * x0 + np.sqrt(1 - a_to - sigma**2) * eps
        if sigma and i + 1 < len(ts):
            x = x + sigma * noises[i]
    return x, clipped


def test_sample_and_invert_match_a_numpy_transcription_of_ddim():
    """Several step counts (integer and fractional strides), x0 clipping active, against the NumPy equations
    above. Replacing `invert` by noise, or shifting alpha_bar_prev by one kept step, fails this."""
    x_T = np.asarray(jax.random.normal(jax.random.key(0), (64, 2, 2, 3)))
    x0 = np.asarray(jax.random.normal(jax.random.key(1), (64, 2, 2, 3))) * 0.5
    for steps in (1, 10, 20, 37, 100):
        kept = _kept(steps)
        expected, clipped = _numpy_ddim(x_T, kept, "sample")
        out = jax.jit(lambda x: ddim.sample(_gaussian_eps, x, None, S, steps))(x_T)
        np.testing.assert_allclose(out, expected, atol=2e-4, err_msg=f"sample {steps}")
        assert clipped > 0, steps
        expected, _ = _numpy_ddim(x0, kept, "invert")
        inv = jax.jit(lambda x: ddim.invert(_gaussian_eps, x, None, S, steps))(x0)
        np.testing.assert_allclose(inv, expected, rtol=1e-4, atol=2e-4, err_msg=f"invert {steps}")
        assert np.abs(expected - x0).mean() > 0.1   # inversion went somewhere: x_T is not x0


def test_stochastic_sampling_matches_the_numpy_transcription_with_the_same_noise():
    x_T = np.asarray(jax.random.normal(jax.random.key(2), (16, 2, 2, 3)))
    key, steps = jax.random.key(7), 20
    noises = [np.asarray(jax.random.normal(k, x_T.shape)) for k in jax.random.split(key, steps)]
    out = jax.jit(lambda x: ddim.sample(_gaussian_eps, x, None, S, steps, eta=1.0, key=key))(x_T)
    np.testing.assert_allclose(out, _numpy_ddim(x_T, _kept(steps), "sample", eta=1.0, noises=noises)[0], atol=5e-4)


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
