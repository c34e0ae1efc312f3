"""GroupNorm's Pallas kernels (run here in Pallas' interpreter; compiled on GPUs) and their custom gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from daetalker_jax.models import norm_kernels as nk


def _inputs(channels: int):
    keys = jax.random.split(jax.random.key(channels), 3)
    x = (2.0 + 3.0 * jax.random.normal(keys[0], (2, 1024, channels))).astype(jnp.bfloat16)
    a = jax.random.uniform(keys[1], (2, channels), jnp.float32, 0.5, 1.5)
    b = jax.random.normal(keys[2], (2, channels), jnp.float32)
    return x, a, b


@pytest.mark.parametrize("channels", [128, 256])
def test_pallas_kernels_match_the_jnp_maths(channels):
    """Moments: fp32 sums of 1,024 bf16 values of magnitude ~5, same as jnp to rtol 1e-5 (summation order only);
    affine + SiLU: the same fp32 maths and one rounding to bf16, so equal (atol 1/64, below a bf16 step at |y| >= 2)."""
    x, a, b = _inputs(channels)
    got, want = nk.moments_pallas(x, interpret=True), nk.moments_jnp(x)
    for g, w in zip(got, want):
        assert g.shape == (2, channels) and g.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-2)
    for silu in (True, False):
        y = nk.affine_pallas(x, a, b, silu, interpret=True)
        ref = nk.affine_jnp(x, a, b, silu)
        assert y.dtype == jnp.bfloat16 and y.shape == x.shape
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref, np.float32), atol=1 / 64, rtol=0)


def test_custom_gradients_equal_autodiff_of_the_jnp_maths():
    """The hand-written backward passes (used under jax.grad in training) against jax.grad of the jnp forward,
    in fp32, rtol 1e-5."""
    x, a, b = _inputs(128)
    x = x.astype(jnp.float32)
    w1, w2 = jax.random.normal(jax.random.key(7), (2, 2, 128))
    wy = jax.random.normal(jax.random.key(8), x.shape)

    def loss(moments, affine, x, a, b):
        s1, s2 = moments(x)
        return (w1 * s1).sum() + (w2 * s2).sum() * 1e-3 + (wy * affine(x, a, b)).sum()

    def custom(x, a, b):
        return loss(lambda x: nk.channel_moments(x, True), lambda *v: nk.channel_affine(*v, True, True), x, a, b)

    def reference(x, a, b):
        return loss(nk.moments_jnp, lambda *v: nk.affine_jnp(*v, True), x, a, b)

    got = jax.grad(custom, argnums=(0, 1, 2))(x, a, b)
    want = jax.grad(reference, argnums=(0, 1, 2))(x, a, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-4)


def test_other_backends_and_shapes_take_the_jnp_path():
    x = jnp.zeros((1, 1024, 128), jnp.bfloat16)
    assert not nk.pallas_ok(x)                                                 # CPU backend here
    assert not nk.pallas_ok(jnp.zeros((1, 1024, 384))) and not nk.pallas_ok(jnp.zeros((1, 96, 128)))


@pytest.mark.parametrize("channels", [128, 256])
def test_concat_kernel_writes_both_concatenations(channels):
    """The decoder's two-input pass: the raw concatenation is an exact copy of the parts, and the normalised one
    equals the jnp maths on that concatenation (atol 1/64, as above)."""
    h, a, b = _inputs(channels)
    s = (h.astype(jnp.float32) * -0.5 + 1).astype(jnp.bfloat16)
    a2, b2 = jnp.concatenate([a, a[:, ::-1]], -1), jnp.concatenate([b, -b], -1)
    for silu in (True, False):
        y, raw = nk.concat_affine_pallas(h, s, a2, b2, silu, interpret=True)
        ref_y, ref_raw = nk.concat_affine_jnp(h, s, a2, b2, silu)
        assert y.shape == raw.shape == (2, 1024, 2 * channels) and y.dtype == raw.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(raw, np.float32), np.asarray(ref_raw, np.float32))
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref_y, np.float32), atol=1 / 64, rtol=0)


def test_concat_gradients_equal_autodiff_of_the_jnp_maths():
    """Both outputs carry gradient (the normalised one through the affine, the raw one straight to the parts);
    fp32, rtol 1e-5."""
    h, a, b = _inputs(128)
    h = h.astype(jnp.float32)
    s = h[:, ::-1] * 0.5
    a2, b2 = jnp.concatenate([a, a], -1), jnp.concatenate([b, -b], -1)
    wy, wr = jax.random.normal(jax.random.key(9), (2, 2, 1024, 256))

    def loss(fn, h, s, a, b):
        y, raw = fn(h, s, a, b)
        return (wy * y).sum() + (wr * raw).sum()

    got = jax.grad(loss, argnums=(1, 2, 3, 4))(lambda *v: nk.concat_affine(*v, True, True), h, s, a2, b2)
    want = jax.grad(loss, argnums=(1, 2, 3, 4))(lambda *v: nk.concat_affine_jnp(*v, True), h, s, a2, b2)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("width, channels", [(32, 256), (64, 128)])
def test_upsample_kernel_writes_both_upsampled_arrays(width, channels):
    """The up-ResBlock's pass: every 2 x 2 block of the raw output is the input pixel (exact), and the normalised
    output equals the jnp maths (affine, then nearest up-sampling; atol 1/64 as above)."""
    x, a, b = _inputs(channels)
    x = x[:, : 4 * width].reshape(2, 4, width, channels)
    for silu in (True, False):
        y, raw = nk.upsample_affine_pallas(x, a, b, silu, interpret=True)
        ref_y, ref_raw = nk.upsample_affine_jnp(x, a, b, silu)
        assert y.shape == raw.shape == (2, 8, 2 * width, channels) and y.dtype == raw.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(raw[:, 1::2, ::2], np.float32), np.asarray(x, np.float32))
        np.testing.assert_array_equal(np.asarray(raw, np.float32), np.asarray(ref_raw, np.float32))
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref_y, np.float32), atol=1 / 64, rtol=0)


def test_upsample_gradients_equal_autodiff_of_the_jnp_maths():
    """Gradients of both outputs sum over each 2 x 2 block back to the input pixel; fp32, rtol 1e-5."""
    x, a, b = _inputs(128)
    x = x.astype(jnp.float32)[:, :256].reshape(2, 8, 32, 128)
    wy, wr = jax.random.normal(jax.random.key(10), (2, 2, 16, 64, 128))

    def loss(fn, x, a, b):
        y, raw = fn(x, a, b)
        return (wy * y).sum() + (wr * raw).sum()

    got = jax.grad(loss, argnums=(1, 2, 3))(lambda *v: nk.upsample_affine(*v, True, True), x, a, b)
    want = jax.grad(loss, argnums=(1, 2, 3))(lambda *v: nk.upsample_affine_jnp(*v, True), x, a, b)
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-4)


def test_kernels_keep_a_sharded_batch_on_its_devices():
    """On several devices (conftest: 8 CPU devices) each kernel runs on the images of its own shard: no
    collective in the compiled step, outputs sharded like the batch, values as the jnp maths (bf16 rounding)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = NamedSharding(mesh, PartitionSpec("data"))
    n = jax.device_count()
    keys = jax.random.split(jax.random.key(0), 4)
    h, s = (jax.device_put(jax.random.normal(k, (n, 512, 128), jnp.bfloat16), batch) for k in keys[:2])
    a = jax.device_put(jax.random.uniform(keys[2], (n, 256), jnp.float32, 0.5, 1.5), batch)
    b = jax.device_put(jax.random.normal(keys[3], (n, 256)), batch)

    def norm(h, s, a, b):
        return (nk.channel_moments(h, True), nk.channel_affine(h, a[:, :128], b[:, :128], True, True),
                nk.concat_affine(h, s, a, b, True, True),
                nk.upsample_affine(h.reshape(n, 16, 32, 128), a[:, :128], b[:, :128], True, True))

    step = jax.jit(norm)
    hlo = step.lower(h, s, a, b).compile().as_text()
    assert not any(op in hlo for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute"))
    got = step(h, s, a, b)
    want = (nk.moments_jnp(h), nk.affine_jnp(h, a[:, :128], b[:, :128], True), nk.concat_affine_jnp(h, s, a, b, True),
            nk.upsample_affine_jnp(h.reshape(n, 16, 32, 128), a[:, :128], b[:, :128], True))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert g.sharding.spec == PartitionSpec("data")
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32), rtol=1e-5, atol=1 / 64)
