"""DiffAE model: official parameter counts, shapes, zero-initialised outputs, bf16 compute with fp32 params."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from daetalker_jax.models.unet import DiffAE, DiffAEConfig, count_params

FFHQ128 = DiffAEConfig()
FFHQ256 = DiffAEConfig(image_size=256, channel_mult=(1, 1, 2, 2, 4, 4), enc_channel_mult=(1, 1, 2, 2, 4, 4, 4))
TINY = DiffAEConfig(image_size=32, model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2, 2),
                    attention_resolutions=(16,), embed_channels=64, z_channels=32, dtype="float32")


@pytest.mark.parametrize("cfg,unet,encoder", [(FFHQ128, 103_871_619, 24_673_536), (FFHQ256, 138_341_891, 30_150_400)])
def test_official_parameter_counts(cfg, unet, encoder):
    """Counts of the official constructors (the anchors: 128.5 M at 128 px, 168.5 M at 256 px)."""
    model = nnx.eval_shape(lambda: DiffAE(cfg, rngs=nnx.Rngs(0)))
    assert count_params(model.unet) == unet and count_params(model.encoder) == encoder
    assert round(count_params(model) / 1e6, 1) == {128: 128.5, 256: 168.5}[cfg.image_size]


def test_shapes_dtypes_and_zero_initialised_output():
    model = DiffAE(TINY, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    z = model.encode(x)
    assert z.shape == (2, 32) and z.dtype == jnp.float32 and jnp.abs(z).sum() > 0
    eps = model(x, jnp.array([0, 999]), z)
    assert eps.shape == x.shape and eps.dtype == jnp.float32
    assert jnp.all(eps == 0)   # zero-initialised output conv: an untrained UNet predicts 0
    params = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(p.dtype == jnp.float32 for p in params)


def test_bf16_compute_keeps_fp32_params_and_norms():
    cfg = DiffAEConfig(**{**TINY.__dict__, "dtype": "bfloat16"})
    model = DiffAE(cfg, rngs=nnx.Rngs(0))
    model.eval()
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
    ref = DiffAE(TINY, rngs=nnx.Rngs(0))
    ref.eval()
    z, z_ref = model.encode(x), ref.encode(x)
    assert z.dtype == jnp.float32
    assert float(jnp.abs(z - z_ref).max()) < 0.05 * float(jnp.abs(z_ref).max())


def test_flop_count_matches_the_official_counter():
    """The anchors (torch FlopCounterMode on the official code): 147.7 (UNet) + 19.0 (encoder) GFLOP/img at 128."""
    from daetalker_jax.flops import count_flops

    model = nnx.eval_shape(lambda: DiffAE(FFHQ128, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((1, 128, 128, 3), jnp.float32)
    t, z = jax.ShapeDtypeStruct((1,), jnp.int32), jax.ShapeDtypeStruct((1, 512), jnp.float32)
    unet = count_flops(lambda s, x, t, z: nnx.merge(graphdef, s)(x, t, z), state, x, t, z)
    encoder = count_flops(lambda s, x: nnx.merge(graphdef, s).encode(x), state, x)
    assert round(unet / 1e9, 1) == 147.7 and round(encoder / 1e9, 1) == 19.0


def test_host_drawn_lecun_normal_has_flax_distribution_and_depends_only_on_the_key():
    """The NumPy-drawn kernel init (no per-shape compilation): flax's lecun_normal statistics (truncated at
    +-2 std of the underlying normal, variance 1 / fan_in), the same values for the same key, others for another
    key, flax's own initializer when traced (abstract builds)."""
    from daetalker_jax.models.layers import lecun_normal

    shape = (3, 3, 64, 128)   # fan_in 576
    x = np.asarray(lecun_normal(jax.random.key(0), shape))
    assert x.shape == shape and x.dtype == np.float32
    bound = 2 / np.sqrt(576) / 0.87962566103423978
    assert np.abs(x).max() <= bound + 1e-7
    assert abs(x.std() * np.sqrt(576) - 1) < 0.01 and abs(x.mean()) < 0.002   # 73,728 draws: std error ~0.3%
    flax_x = np.asarray(nnx.initializers.lecun_normal()(jax.random.key(0), shape))
    assert abs(x.std() - flax_x.std()) / flax_x.std() < 0.01
    np.testing.assert_array_equal(x, np.asarray(lecun_normal(jax.random.key(0), shape)))
    assert not np.array_equal(x, np.asarray(lecun_normal(jax.random.key(1), shape)))
    traced = jax.eval_shape(lambda k: lecun_normal(k, shape), jax.random.key(0))
    assert traced.shape == shape and traced.dtype == jnp.float32


@pytest.mark.parametrize("channels", [64, 96, 256, 48])   # 48: gcd(32, 48) = 16 groups
def test_group_norm_matches_the_textbook_definition(channels):
    """GroupNorm32 computes its statistics per channel first (models/norm_kernels.py: faster on the GPU); it must equal
    (x - mean_group) / sqrt(var_group + 1e-5) * gamma + beta, fp32 (atol 2e-5 on outputs of magnitude ~10), with the
    parameters under flax GroupNorm's names (checkpoints and the converter use them)."""
    from daetalker_jax.models.layers import GroupNorm32

    norm = GroupNorm32(channels, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(channels)
    gamma, beta = rng.normal(size=channels), rng.normal(size=channels)
    norm.norm.scale[...], norm.norm.bias[...] = jnp.asarray(gamma, jnp.float32), jnp.asarray(beta, jnp.float32)
    x = rng.normal(3.0, 2.0, size=(2, 8, 8, channels))
    groups = np.gcd(32, channels)
    g = x.reshape(2, 8, 8, groups, channels // groups)
    mean, var = g.mean(axis=(1, 2, 4), keepdims=True), g.var(axis=(1, 2, 4), keepdims=True)
    want = ((g - mean) / np.sqrt(var + 1e-5)).reshape(x.shape) * gamma + beta
    got = norm(jnp.asarray(x, jnp.float32))
    assert got.dtype == jnp.float32 and float(np.abs(np.asarray(got) - want).max()) < 2e-5
    assert sorted(nnx.to_pure_dict(nnx.state(norm, nnx.Param))["norm"]) == ["bias", "scale"]
    half = norm(jnp.asarray(x, jnp.bfloat16))
    assert half.dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_narrow_conv_equals_the_convolution_of_the_normalised_input(dtype, tol):
    """The UNet's output (GN + SiLU, then a 3x3 conv to 3 channels) as one matmul with the 9 taps' weights and a
    shifted sum: the same as nnx.Conv on silu(GN(x)), zero padding at the borders included. fp32: to 1e-5 relative
    to the output's max (summation order); bf16: the tap products round y once to bf16 where the conv path rounds
    twice, 2e-2."""
    from daetalker_jax.models.layers import GroupNorm32, conv

    rng = np.random.default_rng(0)
    norm = GroupNorm32(64, rngs=nnx.Rngs(0))
    out = conv(64, 3, 3, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(1))
    out.bias[...] = jnp.asarray(rng.normal(size=3), jnp.float32)
    norm.norm.scale[...] = jnp.asarray(rng.uniform(0.5, 1.5, size=64), jnp.float32)
    x = jnp.asarray(rng.normal(1.0, 2.0, size=(2, 8, 12, 64)), dtype)
    got = norm.narrow_conv(x, out, silu=True)
    want = out(norm(x, silu=True)).astype(jnp.float32)
    assert got.shape == (2, 8, 12, 3) and got.dtype == jnp.float32
    scale = float(jnp.abs(want).max())
    assert float(jnp.abs(got - want).max()) < tol * scale
    assert float(jnp.abs(got[:, 0, 0] - want[:, 0, 0]).max()) < tol * scale   # a corner: 5 of 9 taps are padding


def test_hashed_dropout_masks_like_nnx_dropout():
    """The ResBlocks' dropout (rate 0.1): over 2^20 elements the kept fraction is 0.9 within 5 binomial sigmas
    (0.0015), kept values are x / 0.9, and a second call (the stream's next key) keeps each element independently
    of the first (agreement 0.9^2 + 0.1^2 = 0.82 within 0.003); the same key gives the same mask; eval is the
    identity; rate 1 drops everything."""
    from daetalker_jax.models.layers import Dropout

    x = jax.random.normal(jax.random.key(0), (4, 32, 64, 128), jnp.bfloat16)
    drop = Dropout(0.1, rngs=nnx.Rngs(dropout=3))
    first, second = np.asarray(drop(x), np.float32), np.asarray(drop(x), np.float32)
    kept, kept2 = first != 0, second != 0
    assert abs(kept.mean() - 0.9) < 0.0015 and abs(kept2.mean() - 0.9) < 0.0015
    np.testing.assert_array_equal(first[kept], np.asarray(x / 0.9, np.float32)[kept])
    assert abs((kept == kept2).mean() - 0.82) < 0.003
    nnx.reseed(drop, dropout=3)
    np.testing.assert_array_equal(np.asarray(drop(x), np.float32), first)
    drop.eval()
    assert drop(x) is x
    assert not np.asarray(Dropout(1.0, rngs=nnx.Rngs(dropout=3))(x), np.float32).any()


def test_hash_bits_are_uniform_and_uncorrelated_and_shard_like_the_batch():
    """Bits of 1,000 x 1,024 elements: mean of bits / 2^32 0.5 and variance 1/12 within 5 sigmas, neighbours
    along either axis uncorrelated (|r| < 0.005, 5 sigmas); computed with the batch sharded over 8 devices they are
    the same bits (each device hashes global indices)."""
    from jax.sharding import NamedSharding, PartitionSpec

    from daetalker_jax.models.layers import hash_bits

    key = jax.random.key(7)
    u = np.asarray(hash_bits(key, (1000, 1024))).astype(np.float64) / 2 ** 32
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size) and abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / u.size)
    for a, b in ((u[:, :-1], u[:, 1:]), (u[:-1], u[1:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.005
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    sharded = jax.jit(lambda k: hash_bits(k, (8, 16, 16, 32)),
                      out_shardings=NamedSharding(mesh, PartitionSpec("data")))(key)
    np.testing.assert_array_equal(np.asarray(sharded), np.asarray(hash_bits(key, (8, 16, 16, 32))))
