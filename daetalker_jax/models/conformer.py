"""Conformer blocks (Gulati et al. 2020) as used by DAE-Talker's speech encoder and latent decoder.

One block, pre-norm with residuals: x + 1/2 FFN -> x + MHSA with relative positions (Transformer-XL /
ESPnet `rel_selfattn`: content bias u, position bias v, sinusoidal relative encodings) -> x + convolution
module (pointwise -> GLU -> depthwise -> norm -> swish -> pointwise) -> x + 1/2 FFN -> LayerNorm.

Every layer respects a (B, T) validity mask: padded keys get no attention, and padded steps are zeroed
before each convolution, so outputs at valid steps do not depend on the padding. For the same reason the
convolution module normalises with LayerNorm rather than the original BatchNorm (whose batch statistics
would mix in padded steps and other clips).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.models.layers import linear


@dataclass(frozen=True)
class ConformerConfig:
    dim: int = 512
    heads: int = 4
    ffn_dim: int = 2048
    kernel: int = 15
    dropout: float = 0.1
    dtype: str = "bfloat16"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


class LayerNorm32(nnx.Module):
    """LayerNorm computed in fp32 whatever the compute dtype, returned in the input's dtype."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(dim, epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.norm(x.astype(jnp.float32)).astype(x.dtype)


def masked(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Zeroes padded steps; x is (B, T, ...) and mask (B, T)."""
    return jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 2)), x, 0).astype(x.dtype)


def relative_positions(length: int, dim: int) -> jax.Array:
    """(2T - 1, dim) sinusoids of the relative distances T-1, T-2, ..., -(T-1) (row k is distance T-1-k)."""
    rel = jnp.arange(length - 1, -length, -1, dtype=jnp.float32)[:, None]
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    pe = jnp.zeros((2 * length - 1, dim), jnp.float32)
    pe = pe.at[:, 0::2].set(jnp.sin(rel * freqs))
    return pe.at[:, 1::2].set(jnp.cos(rel * freqs))


def rel_shift(scores: jax.Array) -> jax.Array:
    """(..., T, 2T-1) scores against distances T-1..-(T-1) -> (..., T, T) with [i, j] at distance i - j.

    The skew trick: a zero column on the left, reshaping to (2T, T) and dropping the first row moves row i
    left by T-1-i, which is where distance i - j sits for key j."""
    *lead, t, p = scores.shape
    padded = jnp.pad(scores, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
    shifted = padded.reshape(*lead, p + 1, t)[..., 1:, :].reshape(*lead, t, p)
    return shifted[..., :t]


class RelPositionAttention(nnx.Module):
    """Multi-head self-attention with relative positions: score(i, j) = (q_i + u) k_j + (q_i + v) W_p r_{i-j}."""

    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.heads, self.head_dim = cfg.heads, cfg.dim // cfg.heads
        self.query, self.key, self.value, self.out = (linear(cfg.dim, cfg.dim, dtype=dt, rngs=rngs) for _ in range(4))
        self.pos = nnx.Linear(cfg.dim, cfg.dim, use_bias=False, dtype=dt, param_dtype=jnp.float32, rngs=rngs)
        init = nnx.initializers.xavier_uniform()
        self.bias_u = nnx.Param(init(rngs.params(), (self.heads, self.head_dim), jnp.float32))
        self.bias_v = nnx.Param(init(rngs.params(), (self.heads, self.head_dim), jnp.float32))
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x: jax.Array, pos_emb: jax.Array, mask: jax.Array) -> jax.Array:
        b, t, d = x.shape

        def heads(y):
            return y.reshape(*y.shape[:-1], self.heads, self.head_dim)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        p = heads(self.pos(pos_emb.astype(x.dtype)))
        content = jnp.einsum("bthd,bshd->bhts", q + self.bias_u[...].astype(q.dtype), k,
                             preferred_element_type=jnp.float32)
        position = rel_shift(jnp.einsum("bthd,phd->bhtp", q + self.bias_v[...].astype(q.dtype), p,
                                        preferred_element_type=jnp.float32))
        scores = (content + position) / math.sqrt(self.head_dim)
        scores = jnp.where(mask[:, None, None, :], scores, -1e30)
        weights = self.dropout(jax.nn.softmax(scores, axis=-1)).astype(v.dtype)
        return self.out(jnp.einsum("bhts,bshd->bthd", weights, v).reshape(b, t, d))


class FeedForward(nnx.Module):
    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.up = linear(cfg.dim, cfg.ffn_dim, dtype=dt, rngs=rngs)
        self.down = linear(cfg.ffn_dim, cfg.dim, dtype=dt, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.dropout(self.down(self.dropout(nnx.swish(self.up(x)))))


class DepthwiseConv1d(nnx.Conv):
    """A depthwise 1-D convolution (SAME padding) computed as K shifted multiply-adds in fp32: the same
    parameters and result as `nnx.Conv(feature_group_count=dim)`. Why: XLA compiled the grouped
    convolution's gradient for ~4 s per Conformer block on a CPU (more than half of speech2latent's train
    step), and a GPU autotunes it; the shifted sum is one elementwise fusion."""

    def __init__(self, dim: int, kernel: int, *, dtype, rngs: nnx.Rngs):
        super().__init__(dim, dim, kernel_size=(kernel,), padding="SAME", feature_group_count=dim, dtype=dtype,
                         param_dtype=jnp.float32, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.kernel[...][:, 0, :]                       # (K, D)
        k, t = w.shape[0], x.shape[1]
        left = (k - 1) // 2
        xp = jnp.pad(x.astype(jnp.float32), [(0, 0), (left, k - 1 - left), (0, 0)])
        y = sum(xp[:, i:i + t] * w[i] for i in range(k)) + self.bias[...]
        return y.astype(self.dtype or x.dtype)


class ConvModule(nnx.Module):
    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs):
        dt = cfg.compute_dtype
        self.pointwise_in = linear(cfg.dim, 2 * cfg.dim, dtype=dt, rngs=rngs)
        self.depthwise = DepthwiseConv1d(cfg.dim, cfg.kernel, dtype=dt, rngs=rngs)
        self.norm = LayerNorm32(cfg.dim, rngs=rngs)
        self.pointwise_out = linear(cfg.dim, cfg.dim, dtype=dt, rngs=rngs)
        self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        h = nnx.glu(self.pointwise_in(x), axis=-1)
        h = nnx.swish(self.norm(self.depthwise(masked(h, mask))))
        return self.dropout(self.pointwise_out(h))


class ConformerBlock(nnx.Module):
    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs):
        self.ffn_in_norm, self.ffn_in = LayerNorm32(cfg.dim, rngs=rngs), FeedForward(cfg, rngs=rngs)
        self.attn_norm, self.attn = LayerNorm32(cfg.dim, rngs=rngs), RelPositionAttention(cfg, rngs=rngs)
        self.attn_dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
        self.conv_norm, self.conv = LayerNorm32(cfg.dim, rngs=rngs), ConvModule(cfg, rngs=rngs)
        self.ffn_out_norm, self.ffn_out = LayerNorm32(cfg.dim, rngs=rngs), FeedForward(cfg, rngs=rngs)
        self.final_norm = LayerNorm32(cfg.dim, rngs=rngs)

    def __call__(self, x: jax.Array, pos_emb: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + 0.5 * self.ffn_in(self.ffn_in_norm(x))
        x = x + self.attn_dropout(self.attn(self.attn_norm(x), pos_emb, mask))
        x = x + self.conv(self.conv_norm(x), mask)
        x = x + 0.5 * self.ffn_out(self.ffn_out_norm(x))
        return self.final_norm(x)


class Conformer(nnx.Module):
    """A stack of blocks sharing one table of relative position encodings."""

    def __init__(self, cfg: ConformerConfig, blocks: int, *, rngs: nnx.Rngs):
        self.dim = cfg.dim
        self.blocks = nnx.List([ConformerBlock(cfg, rngs=rngs) for _ in range(blocks)])

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        pos_emb = relative_positions(x.shape[1], self.dim)
        for block in self.blocks:
            x = block(x, pos_emb, mask)
        return masked(x, mask)
