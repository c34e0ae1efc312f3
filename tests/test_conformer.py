"""Conformer and speech2latent model: relative-position attention against a direct O(T^2) reference,
padding invariance, and the pose path."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from daetalker_jax.models.conformer import Conformer, ConformerConfig, RelPositionAttention
from daetalker_jax.models.speech2latent import Speech2Latent, Speech2LatentConfig

SMALL = ConformerConfig(dim=16, heads=2, ffn_dim=32, kernel=5, dropout=0.1, dtype="float32")


def _sinusoid(distance: float, dim: int) -> np.ndarray:
    freqs = np.exp(-math.log(10000.0) * np.arange(0, dim, 2) / dim)
    out = np.zeros(dim)
    out[0::2], out[1::2] = np.sin(distance * freqs), np.cos(distance * freqs)
    return out


def _reference_attention(attn: RelPositionAttention, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Transformer-XL attention written out one (query, key) pair at a time."""
    def lin(layer, v):
        w = np.asarray(layer.kernel[...], np.float64)
        return v @ w + (np.asarray(layer.bias[...], np.float64) if layer.bias is not None else 0)

    h, dh = attn.heads, attn.head_dim
    u, v_bias = np.asarray(attn.bias_u[...], np.float64), np.asarray(attn.bias_v[...], np.float64)
    b, t, d = x.shape
    out = np.zeros((b, t, d))
    for n in range(b):
        q, k, v = (lin(layer, x[n]).reshape(t, h, dh) for layer in (attn.query, attn.key, attn.value))
        ctx = np.zeros((t, h, dh))
        for head in range(h):
            for i in range(t):
                scores = np.full(t, -np.inf)
                for j in range(t):
                    if not mask[n, j]:
                        continue
                    r = lin(attn.pos, _sinusoid(i - j, d)).reshape(h, dh)[head]
                    scores[j] = ((q[i, head] + u[head]) @ k[j, head] + (q[i, head] + v_bias[head]) @ r) / math.sqrt(dh)
                w = np.exp(scores - scores.max())
                ctx[i, head] = (w / w.sum()) @ v[:, head]
        out[n] = lin(attn.out, ctx.reshape(t, d))
    return out


def test_relative_attention_equals_direct_reference():
    attn = RelPositionAttention(SMALL, rngs=nnx.Rngs(0))
    attn.eval()
    rng = np.random.default_rng(0)
    for p in (attn.bias_u, attn.bias_v):   # non-trivial biases so both terms are exercised
        p[...] = jnp.asarray(rng.normal(size=p[...].shape), jnp.float32)
    t = 7
    x = rng.normal(size=(2, t, SMALL.dim)).astype(np.float32)
    mask = np.ones((2, t), bool)
    mask[1, 5:] = False
    from daetalker_jax.models.conformer import relative_positions

    ours = np.asarray(attn(jnp.asarray(x), relative_positions(t, SMALL.dim), jnp.asarray(mask)))
    ref = _reference_attention(attn, x.astype(np.float64), mask)
    np.testing.assert_allclose(ours[mask], ref[mask], rtol=1e-4, atol=1e-5)


def test_padding_does_not_change_valid_outputs():
    """A clip alone (T=9) vs the same clip padded to 16 with garbage: identical at the 9 valid steps."""
    model = Conformer(SMALL, 2, rngs=nnx.Rngs(1))
    model.eval()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 9, SMALL.dim)).astype(np.float32)
    alone = model(jnp.asarray(x), jnp.ones((1, 9), bool))
    padded = np.concatenate([x, 100 * rng.normal(size=(1, 7, SMALL.dim)).astype(np.float32)], axis=1)
    mask = np.arange(16)[None] < 9
    out = model(jnp.asarray(padded), jnp.asarray(mask))
    np.testing.assert_allclose(np.asarray(out[:, :9]), np.asarray(alone), rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(out[:, 9:]) == 0)


TINY_S2L = Speech2LatentConfig(feature_dim=12, per_frame=4, latent_dim=6, encoder_blocks=1, decoder_blocks=1,
                               pose_hidden=8, conformer=SMALL)


@pytest.mark.parametrize("layers,per_frame", [(0, 4), (3, 2)])
def test_speech2latent_shapes_and_padding(layers, per_frame):
    cfg = Speech2LatentConfig(**{**TINY_S2L.__dict__, "feature_layers": layers, "per_frame": per_frame})
    model = Speech2Latent(cfg, rngs=nnx.Rngs(2))
    model.eval()
    rng = np.random.default_rng(2)
    t, extra = 10, 6
    shape = (1, per_frame * t) + ((layers,) if layers else ()) + (cfg.feature_dim,)
    feats = rng.normal(size=shape).astype(np.float32)
    pose = rng.normal(size=(1, t, 3)).astype(np.float32) * 10
    z, pred = model(jnp.asarray(feats), jnp.ones((1, t), bool), jnp.asarray(pose))
    assert z.shape == (1, t, cfg.latent_dim) and pred.shape == (1, t, 3)
    pad_feats = np.concatenate([feats, rng.normal(size=(1, per_frame * extra) + shape[2:]).astype(np.float32)], 1)
    pad_pose = np.concatenate([pose, np.full((1, extra, 3), 50.0, np.float32)], 1)
    mask = np.arange(t + extra)[None] < t
    z2, pred2 = model(jnp.asarray(pad_feats), jnp.asarray(mask), jnp.asarray(pad_pose))
    np.testing.assert_allclose(np.asarray(z2[:, :t]), np.asarray(z), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(pred2[:, :t]), np.asarray(pred), rtol=1e-5, atol=1e-5)


def test_pose_path():
    """A different given pose changes the latents; with no pose the predicted one is used."""
    model = Speech2Latent(TINY_S2L, rngs=nnx.Rngs(3))
    model.eval()
    rng = np.random.default_rng(3)
    feats = jnp.asarray(rng.normal(size=(2, 40, 12)).astype(np.float32))
    mask = jnp.ones((2, 10), bool)
    z0, pred = model(feats, mask, jnp.zeros((2, 10, 3)))
    z1, _ = model(feats, mask, jnp.full((2, 10, 3), 15.0))
    assert float(jnp.abs(z1 - z0).mean()) > 1e-2
    z_free, pred_free = model(feats, mask)
    np.testing.assert_allclose(np.asarray(pred_free), np.asarray(pred), rtol=1e-6)
    z_given, _ = model(feats, mask, model.denormalize_pose(pred))   # feeding the prediction back = no pose
    np.testing.assert_allclose(np.asarray(z_free), np.asarray(z_given), rtol=1e-4, atol=1e-5)
    latents, used = model.predict(feats, mask)
    np.testing.assert_allclose(np.asarray(used), np.asarray(model.denormalize_pose(pred)), rtol=1e-6)
    assert jax.tree.all(jax.tree.map(lambda a: bool(jnp.isfinite(a).all()), (latents, used)))


@pytest.mark.parametrize("kernel", [15, 4])
def test_depthwise_conv_equals_the_grouped_convolution(kernel):
    """The shifted-sum depthwise convolution gives nnx.Conv's result (same parameters) to fp32 rounding."""
    from daetalker_jax.models.conformer import DepthwiseConv1d

    conv = DepthwiseConv1d(24, kernel, dtype=jnp.float32, rngs=nnx.Rngs(0))
    conv.bias[...] = jax.random.normal(jax.random.key(2), conv.bias[...].shape)
    x = jax.random.normal(jax.random.key(1), (3, 37, 24))
    reference = nnx.Conv.__call__(conv, x)          # XLA's grouped convolution with the same kernel and bias
    np.testing.assert_allclose(np.asarray(conv(x)), np.asarray(reference), atol=1e-5, rtol=1e-5)
