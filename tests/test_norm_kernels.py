"""GroupNorm's Pallas kernels (models/norm_kernels.py and the UNet's fused ones, models/unet_kernels.py; run here in
Pallas' interpreter, compiled on GPUs) and their custom gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from daetalker_jax.models import norm_kernels as nk
from daetalker_jax.models import unet_kernels as uk


def _inputs(channels: int, positions: int = 1024):
    keys = jax.random.split(jax.random.key(channels), 3)
    x = (2.0 + 3.0 * jax.random.normal(keys[0], (2, positions, channels))).astype(jnp.bfloat16)
    a = jax.random.uniform(keys[1], (2, channels), jnp.float32, 0.5, 1.5)
    b = jax.random.normal(keys[2], (2, channels), jnp.float32)
    return x, a, b


def _assert_same_gradients(custom, reference, args, seed: int, rtol: float = 1e-5, atol: float = 1e-4):
    """jax.grad of sum(weights * outputs) w.r.t. every input: through `custom` (the kernels' hand-written backward
    passes) as through `reference` (autodiff of the jnp maths); one random weight array per output."""
    shapes = jax.tree.leaves(jax.eval_shape(reference, *args))
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    weights = [jax.random.normal(k, o.shape) for k, o in zip(keys, shapes)]

    def loss(fn, *args):
        return sum((w * o).sum() for w, o in zip(weights, jax.tree.leaves(fn(*args))))

    argnums = tuple(range(1, len(args) + 1))
    got, want = (jax.grad(loss, argnums)(fn, *args) for fn in (custom, reference))
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)


@pytest.mark.parametrize("channels, positions", [(128, 1024), (256, 1024), (384, 256), (640, 64)])
def test_pallas_kernels_match_the_jnp_maths(channels, positions):
    """Moments: fp32 sums of bf16 values of magnitude ~5, same as jnp to rtol 1e-5 (summation order only);
    affine + SiLU: the same fp32 maths and one rounding to bf16, so equal (atol 1/64, below a bf16 step at |y| >= 2).
    384 and 640 channels take blocks of 128; 256 and 64 positions fewer programs per image for the moments."""
    x, a, b = _inputs(channels, positions)
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


def test_other_backends_take_the_jnp_path():
    """On the CPU every GroupNorm pass is the jnp maths: no Pallas call is traced unless interpret mode asks for
    one, and the interpreted kernel gives what the CPU path gives (atol 1/64, one bf16 rounding)."""
    x, a, b = _inputs(128)
    assert not nk.pallas_ok(x) and not uk.concat_ok(x, x) and not uk.project_ok(x, x, x[0, :256, :128])

    def traced(*flags) -> str:
        return str(jax.make_jaxpr(lambda *v: (nk.channel_affine(*v, True, *flags), nk.channel_moments(v[0], *flags)))(
            x, a, b))

    assert "pallas_call" not in traced() and traced(True).count("pallas_call") == 2
    np.testing.assert_allclose(np.asarray(nk.channel_affine(x, a, b, True, True), np.float32),
                               np.asarray(nk.channel_affine(x, a, b, True), np.float32), atol=1 / 64, rtol=0)


@pytest.mark.parametrize("channels, skip", [(128, 128), (256, 256), (256, 128), (384, 256)])
def test_concat_kernel_writes_both_concatenations(channels, skip):
    """The decoder's two-input pass, equal parts and the unequal ones of the UNet's level changes: the raw
    concatenation is an exact copy of the parts, and the normalised one equals the jnp maths on that concatenation
    (atol 1/64, as above)."""
    h, a, b = _inputs(channels)
    s = (h[..., :skip].astype(jnp.float32) * -0.5 + 1).astype(jnp.bfloat16)
    a2, b2 = jnp.concatenate([a, a[:, :skip]], -1), jnp.concatenate([b, -b[:, :skip]], -1)
    for silu in (True, False):
        y, raw = uk.concat_affine_pallas(h, s, a2, b2, silu, interpret=True)
        ref_y, ref_raw = uk.concat_affine_jnp(h, s, a2, b2, silu)
        assert y.shape == raw.shape == (2, 1024, channels + skip) and y.dtype == raw.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(raw, np.float32), np.asarray(ref_raw, np.float32))
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref_y, np.float32), atol=1 / 64, rtol=0)


def test_concat_gradients_equal_autodiff_of_the_jnp_maths():
    """Both outputs carry gradient (the normalised one through the affine, the raw one straight to the parts);
    fp32, rtol 1e-5."""
    h, a, b = _inputs(128)
    h = h.astype(jnp.float32)
    s = h[:, ::-1] * 0.5
    a2, b2 = jnp.concatenate([a, a], -1), jnp.concatenate([b, -b], -1)
    _assert_same_gradients(lambda *v: uk.concat_affine(*v, True, True), lambda *v: uk.concat_affine_jnp(*v, True),
                           (h, s, a2, b2), seed=9)


def _concat_inputs(channels: int, skip: int, dtype=jnp.bfloat16):
    """h (2, 1024, channels), s (.., skip), a and b over the concatenation, a 1x1 projection to `skip` channels (as
    in the UNet decoder) and its bias."""
    h, a, b = _inputs(channels)
    s = (h[..., :skip].astype(jnp.float32) * -0.5 + 1).astype(jnp.bfloat16)
    a2, b2 = jnp.concatenate([a, a[:, :skip]], -1), jnp.concatenate([b, -b[:, :skip]], -1)
    w = jax.random.normal(jax.random.key(11), (channels + skip, skip)) * 0.05
    return h.astype(dtype), s.astype(dtype), a2, b2, w.astype(dtype), b[0, :skip]


@pytest.mark.parametrize("channels, skip", [(128, 128), (256, 128), (384, 256)])
def test_concat_grads_kernel_matches_the_jnp_maths(channels, skip):
    """The decoder's backward pass in bf16 (as training runs it), equal and unequal parts: each part's cotangent as
    the jnp maths to one bf16 rounding of values up to ~8 (atol 1/16 + rtol 2^-8), da and db (fp32 sums of 1,024
    products) to rtol 1e-4."""
    h, s, a, b, _, _ = _concat_inputs(channels, skip)
    keys = jax.random.split(jax.random.key(5), 2)
    g_y, g_raw = (jax.random.normal(k, (2, 1024, channels + skip), jnp.bfloat16) for k in keys)
    for silu in (True, False):
        got = uk.concat_grads_pallas(h, s, a, b, g_y, g_raw, silu, interpret=True)
        want = uk.concat_grads_jnp(h, s, a, b, g_y, g_raw, silu)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape and g.dtype == w.dtype
            g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
            if i < 2:
                np.testing.assert_allclose(g, w, rtol=2 ** -8, atol=1 / 16)
            else:
                np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("channels, skip, rows, tiles", [(128, 128, 128, 4), (128, 128, 64, 1), (256, 128, 64, 2)])
def test_project_kernel_normalises_and_projects(channels, skip, rows, tiles):
    """The decoder's two-input pass with the 1x1 projection, at the model's tiles and others (the model only gives it
    128 + 128 channels): the normalised concatenation equals the jnp maths (atol 1/64, as above); the projection
    [h, s] @ w + bias (fp32 sums, then one rounding) equals the exact product of the same bf16 values to one bf16
    rounding (rtol 2^-8, atol 1e-3 for sums near zero)."""
    h, s, a, b, w, bias = _concat_inputs(channels, skip)
    raw = np.concatenate([np.asarray(h, np.float64), np.asarray(s, np.float64)], -1)
    exact = raw @ np.asarray(w, np.float64) + np.asarray(bias, np.float64)
    for silu in (True, False):
        y, proj = uk.project_affine_pallas(h, s, a, b, w, bias, silu, rows=rows, tiles=tiles, interpret=True)
        ref_y, ref_proj = uk.project_affine_jnp(h, s, a, b, w, bias, silu)
        assert y.shape == (2, 1024, channels + skip) and proj.shape == (2, 1024, skip)
        assert y.dtype == proj.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref_y, np.float32), atol=1 / 64, rtol=0)
        for p in (proj, ref_proj):
            np.testing.assert_allclose(np.asarray(p, np.float64), exact, rtol=2 ** -8, atol=1e-3)


def test_project_gradients_equal_autodiff_of_the_jnp_maths():
    """Both outputs carry gradient (the normalised one through the affine, the projection to the parts, w and the
    bias); fp32, rtol 1e-4 (dw sums 2,048 products in another order)."""
    args = _concat_inputs(128, 128, jnp.float32)
    _assert_same_gradients(lambda *v: uk.project_affine(*v, True, True), lambda *v: uk.project_affine_jnp(*v, True),
                           args, seed=9, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("width, channels", [(32, 256), (64, 128)])
def test_upsample_kernel_writes_both_upsampled_arrays(width, channels):
    """The up-ResBlock's pass: every 2 x 2 block of the raw output is the input pixel (exact), and the normalised
    output equals the jnp maths (affine, then nearest up-sampling; atol 1/64 as above)."""
    x, a, b = _inputs(channels)
    x = x[:, : 4 * width].reshape(2, 4, width, channels)
    for silu in (True, False):
        y, raw = uk.upsample_affine_pallas(x, a, b, silu, interpret=True)
        ref_y, ref_raw = uk.upsample_affine_jnp(x, a, b, silu)
        assert y.shape == raw.shape == (2, 8, 2 * width, channels) and y.dtype == raw.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(raw[:, 1::2, ::2], np.float32), np.asarray(x, np.float32))
        np.testing.assert_array_equal(np.asarray(raw, np.float32), np.asarray(ref_raw, np.float32))
        np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(ref_y, np.float32), atol=1 / 64, rtol=0)


def test_upsample_gradients_equal_autodiff_of_the_jnp_maths():
    """Gradients of both outputs sum over each 2 x 2 block back to the input pixel; fp32, rtol 1e-5."""
    x, a, b = _inputs(128)
    x = x.astype(jnp.float32)[:, :256].reshape(2, 8, 32, 128)
    _assert_same_gradients(lambda *v: uk.upsample_affine(*v, True, True), lambda *v: uk.upsample_affine_jnp(*v, True),
                           (x, a, b), seed=10)


def test_downsample_pools_the_normalised_and_the_raw_input():
    """The down-ResBlock's pass (jnp, fused by XLA): the raw output is the 2 x 2 mean of the input within one bf16
    rounding, the normalised one the 2 x 2 mean of the fp32 affine (+ SiLU), rounded once."""
    x, a, b = _inputs(128)
    x = x[:, :512].reshape(2, 8, 64, 128)
    for silu in (True, False):
        y, raw = uk.downsample_affine(x, a, b, silu)
        assert y.shape == raw.shape == (2, 4, 32, 128) and y.dtype == raw.dtype == jnp.bfloat16
        xf = np.asarray(x, np.float32)
        np.testing.assert_allclose(np.asarray(raw, np.float32), xf.reshape(2, 4, 2, 32, 2, 128).mean((2, 4)),
                                   rtol=2 ** -8, atol=0)
        full = np.asarray(nk.silu_affine(x.reshape(2, -1, 128), a, b, silu)).reshape(2, 4, 2, 32, 2, 128)
        np.testing.assert_allclose(np.asarray(y, np.float32), full.mean((2, 4)), rtol=2 ** -8, atol=1e-6)


def test_affine_matmul_kernel_and_gradients():
    """The output head's pass: silu(x * a + b) in fp32, rounded to w's dtype, times w (C x 32) with fp32 sums.
    The kernel equals the jnp maths to rtol 1e-5 (summation order), but for the rare y whose bf16 rounding flips
    with a 1-ulp different fp32 sigmoid (0.07% here: atol 1/64 covers a bf16 step of |y| < 16 times |w| < 0.5); its
    custom gradients equal autodiff of the jnp maths (fp32; rtol 1e-4: dw sums 2,048 products in another order)."""
    x, a, b = _inputs(128)
    w = jax.random.normal(jax.random.key(12), (128, 32)) * 0.1
    for silu in (True, False):
        got = uk.affine_matmul_pallas(x, a, b, w.astype(jnp.bfloat16), silu, interpret=True)
        want = uk.affine_matmul_jnp(x, a, b, w.astype(jnp.bfloat16), silu)
        assert got.shape == (2, 1024, 32) and got.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1 / 64 if silu else 1e-4)
    _assert_same_gradients(lambda *v: uk.affine_matmul(*v, True, True), lambda *v: uk.affine_matmul_jnp(*v, True),
                           (x.astype(jnp.float32), a, b, w), seed=13, rtol=1e-4, atol=1e-3)


def test_kernels_keep_a_sharded_batch_on_its_devices():
    """On several devices (conftest: 8 CPU devices) each kernel runs on the images of its own shard: no
    collective in the compiled step, outputs sharded like the batch (the matrices replicated), values as the jnp
    maths (bf16 rounding)."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = NamedSharding(mesh, PartitionSpec("data"))
    n = jax.device_count()
    keys = jax.random.split(jax.random.key(0), 5)
    h = jax.device_put(jax.random.normal(keys[0], (n, 512, 128), jnp.bfloat16), batch)
    s = jax.device_put(jax.random.normal(keys[1], (n, 512, 256), jnp.bfloat16), batch)
    a = jax.device_put(jax.random.uniform(keys[2], (n, 384), jnp.float32, 0.5, 1.5), batch)
    b = jax.device_put(jax.random.normal(keys[3], (n, 384)), batch)
    replicated = NamedSharding(mesh, PartitionSpec())
    w = jax.device_put(jax.random.normal(keys[4], (384, 128), jnp.bfloat16) * 0.05, replicated)
    bias = jax.device_put(jnp.linspace(-1, 1, 128), replicated)

    def concat_grads(concat, h, s, a, b):   # the backward pass, its cotangents the outputs themselves
        out, pull = jax.vjp(concat, h, s, a, b)
        return pull(out)

    def norm(h, s, a, b, w, bias):
        a1, b1, up = a[:, :128], b[:, :128], h.reshape(n, 16, 32, 128)
        return (nk.channel_moments(h, True), nk.channel_affine(h, a1, b1, True, True),
                uk.concat_affine(h, s, a, b, True, True),
                uk.project_affine(h, h, a[:, :256], b[:, :256], w[:256], bias, True, True),
                uk.upsample_affine(up, a1, b1, True, True), uk.affine_matmul(h, a1, b1, w[:128, :32], True, True),
                concat_grads(lambda *v: uk.concat_affine(*v, True, True), h, s, a, b))

    step = jax.jit(norm)
    hlo = step.lower(h, s, a, b, w, bias).compile().as_text()
    assert not any(op in hlo for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute"))
    got = step(h, s, a, b, w, bias)
    a1, b1, up = a[:, :128], b[:, :128], h.reshape(n, 16, 32, 128)
    want = (nk.moments_jnp(h), nk.affine_jnp(h, a1, b1, True), uk.concat_affine_jnp(h, s, a, b, True),
            uk.project_affine_jnp(h, h, a[:, :256], b[:, :256], w[:256], bias, True),
            uk.upsample_affine_jnp(up, a1, b1, True), uk.affine_matmul_jnp(h, a1, b1, w[:128, :32], True),
            concat_grads(lambda *v: uk.concat_affine_jnp(*v, True), h, s, a, b))
    for i, (got_i, want_i) in enumerate(zip(got, want)):
        # the projection: bf16 values of ~4 (a step of 1/32) from fp32 sums; the backward pass: one bf16 step of its
        # values (up to ~8) where fp32 maths in another order round the other way
        rtol = {3: 2 ** -8, 6: 2 ** -7}.get(i, 1e-5)
        for g, w_ in zip(jax.tree.leaves(got_i), jax.tree.leaves(want_i)):
            assert g.sharding.spec == PartitionSpec("data")
            np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w_, np.float32), rtol=rtol, atol=1 / 64)
