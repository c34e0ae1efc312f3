"""Building blocks of the DiffAE UNet and semantic encoder (official phizaz/diffae layout, NHWC).

Compute runs in `dtype` (bf16 by default in the configs), parameters are stored in fp32, and every
GroupNorm (and the attention softmax) is computed in fp32, as in the official GroupNorm32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models.norm_kernels import channel_affine, channel_moments
from daetalker_jax.models.unet_kernels import (affine_matmul, concat_affine, downsample_affine, project_affine,
                                               project_ok, upsample_affine)

_LECUN = nnx.initializers.lecun_normal()
_TRUNCATED_STD = 0.87962566103423978   # std of a unit normal truncated to [-2, 2]


def lecun_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """flax's default kernel init (normal truncated to +-2 std, variance 1 / fan_in), drawn with NumPy from the
    key's bits. Why: drawn by eager JAX, every new parameter shape compiles a kernel (~0.1 s each: 16 s to
    initialise the reference DiffAE on an H200), and a jitted initialisation compiles for ~50 s. Traced (an
    abstract build) it is flax's own initializer: only the shape matters there."""
    try:
        seed = np.asarray(jax.random.key_data(key)).ravel()
    except jax.errors.TracerArrayConversionError:
        return _LECUN(key, shape, dtype)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(math.prod(shape))
    while (bad := np.abs(x) > 2).any():
        x[bad] = rng.standard_normal(int(bad.sum()))
    std = 1.0 / math.sqrt(math.prod(shape[:-1])) / _TRUNCATED_STD
    return jnp.asarray((x * std).reshape(shape), dtype)


def zeros(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Zeros made on the host (no per-shape compilation, see `lecun_normal`)."""
    return jnp.asarray(np.zeros(shape, dtype))


def ones(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    return jnp.asarray(np.ones(shape, dtype))


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of integer timesteps, [cos, sin] order (official DiffAE)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class GroupNorm32(nnx.Module):
    """GroupNorm(32) computed in fp32, returned in the compute dtype. Narrow models whose channel counts
    (skip concatenations included) are not multiples of 32 use the largest group count dividing C,
    gcd(32, C); every official DiffAE layer has C % 32 == 0 and so keeps 32 groups. The flax GroupNorm only holds
    the parameters (their names are what checkpoints and the converter use); `__call__` computes the norm itself."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.norm = nnx.GroupNorm(channels, num_groups=math.gcd(32, channels), epsilon=1e-5, dtype=jnp.float32,
                                  param_dtype=jnp.float32, scale_init=ones, bias_init=zeros, rngs=rngs)

    def __call__(self, x: jax.Array, scale: jax.Array | None = None, shift: jax.Array | None = None,
                 silu: bool = False) -> jax.Array:
        """GN(x) [* scale + shift] [then SiLU], scale/shift (B, C) per image (AdaGN). The normalisation and the
        modulation fold into one per-(image, channel) affine, so the whole op is two passes over x: per-channel
        moments (then per group), and silu(x * a + b) (models/norm_kernels.py: Pallas kernels on a GPU)."""
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        a, offset = self._fold(flat, scale, shift)
        return channel_affine(flat, a, offset, silu).reshape(x.shape)

    def concat(self, h: jax.Array, skip: jax.Array, proj: nnx.Conv,
               silu: bool = False) -> tuple[jax.Array, jax.Array]:
        """(GN([h, skip]) [then SiLU], proj([h, skip])) for a 1x1 `proj` (the UNet decoder's skip convolution), without
        XLA's concatenation copy: the moments of h and skip are taken apart (skip's are the ones its encoder consumer
        computed) and one pass writes the normalised concatenation and either the projection (parts of 128 channels
        on a GPU) or the raw concatenation, which `proj` then reads."""
        parts = [v.reshape(v.shape[0], -1, v.shape[-1]) for v in (h, skip)]
        moments = [jnp.concatenate(m, axis=-1) for m in zip(*map(channel_moments, parts))]
        a, offset = self._affine(moments, parts[0].shape[1])
        w = proj.kernel[0, 0].astype(proj.dtype)
        shape = h.shape[:-1] + (-1,)
        if project_ok(*parts, w):
            return tuple(v.reshape(shape) for v in project_affine(*parts, a, offset, w, proj.bias[...], silu))
        y, raw = concat_affine(*parts, a, offset, silu)
        return y.reshape(shape), proj(raw.reshape(shape))

    def resample(self, x: jax.Array, how: str, silu: bool = False) -> tuple[jax.Array, jax.Array]:
        """(GN(x) [then SiLU], x), both up-sampled 2x (nearest; how="up") or 2x2-average-pooled ("down"), written
        in one pass (the up- and down-ResBlocks)."""
        a, offset = self._fold(x.reshape(x.shape[0], -1, x.shape[-1]))
        return {"up": upsample_affine, "down": downsample_affine}[how](x, a, offset, silu)

    def narrow_conv(self, x: jax.Array, conv: nnx.Conv, silu: bool = False) -> jax.Array:
        """conv(GN(x) [then SiLU]) in fp32, for a 3x3 stride-1 `conv` with few outputs (the UNet's RGB output).
        Why not the convolution: cuDNN runs it at ~1/4 of its input-read speed. One pass normalises x and multiplies
        it by the 9 taps' weights, then the 9 shifted tap outputs are summed (`sum_taps`): 0.78 -> 0.44 ms with the
        normalisation, 100 images at 128 px on an H200 (bench/norm_kernels.py)."""
        n, h, w, c = x.shape
        flat = x.reshape(n, -1, c)
        taps = affine_matmul(flat, *self._fold(flat), conv_taps(conv.kernel[...], conv.dtype), silu)
        return sum_taps(taps.reshape(n, h, w, -1), conv.kernel.shape[-1]) + conv.bias[...]

    def _fold(self, flat: jax.Array, scale=None, shift=None) -> tuple[jax.Array, jax.Array]:
        """(a, b) of GN(x) [* scale + shift] = x * a + b from x's own moments; flat (B, P, C)."""
        return self._affine(channel_moments(flat), flat.shape[1], scale, shift)

    def _affine(self, moments, positions: int, scale=None, shift=None) -> tuple[jax.Array, jax.Array]:
        """Per-channel sums -> (a, b) of GN(x) [* scale + shift] = x * a + b. Variance as E[x^2] - E[x]^2 in
        fp32, as flax's default."""
        total, squares = moments
        b, c = total.shape
        groups, per_group = self.norm.num_groups, c // self.norm.num_groups
        count = positions * per_group
        mean = total.reshape(b, groups, per_group).sum(-1) / count
        var = jnp.maximum(squares.reshape(b, groups, per_group).sum(-1) / count - jnp.square(mean), 0.0)
        inv = jnp.repeat(jax.lax.rsqrt(var + self.norm.epsilon), per_group, axis=1) * self.norm.scale[...]
        a, offset = inv, self.norm.bias[...] - jnp.repeat(mean, per_group, axis=1) * inv
        if scale is not None:
            a, offset = a * scale, offset * scale + shift
        return a, offset


def conv(cin: int, cout: int, k: int, *, dtype, rngs: nnx.Rngs, zero: bool = False) -> nnx.Conv:
    return nnx.Conv(cin, cout, kernel_size=(k, k), padding=k // 2, dtype=dtype, param_dtype=jnp.float32,
                    kernel_init=zeros if zero else lecun_normal, bias_init=zeros, rngs=rngs)


def linear(cin: int, cout: int, *, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(cin, cout, dtype=dtype, param_dtype=jnp.float32, kernel_init=lecun_normal, bias_init=zeros,
                      rngs=rngs)


def conv_taps(kernel: jax.Array, dtype) -> jax.Array:
    """A 3x3 conv kernel (3, 3, C, O) as the matrix (C, 9 * O) of its taps, columns padded to a multiple of 32
    (Triton's matmul tiles)."""
    c, o = kernel.shape[2:]
    taps = kernel.transpose(2, 0, 1, 3).reshape(c, 9 * o)
    return jnp.pad(taps, ((0, 0), (0, -9 * o % 32))).astype(dtype)


def sum_taps(t: jax.Array, o: int) -> jax.Array:
    """The 3x3 'same' convolution from its tap outputs t (B, H, W, >= 9 * O) = x @ conv_taps: out[y, x] sums tap
    (i, j) at [y + i - 1, x + j - 1]; taps outside the image read the zero padding and add nothing."""
    n, h, w = t.shape[:3]
    t = jnp.pad(t[..., :9 * o].reshape(n, h, w, 3, 3, o), ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0), (0, 0)))
    return sum(t[:, i:i + h, j:j + w, i, j] for i in range(3) for j in range(3))


def _mix32(v: jax.Array) -> jax.Array:
    """A bijective 32-bit integer finaliser with low bias ("lowbias32", C. Wellons' hash-prospector)."""
    v = (v ^ (v >> 16)) * jnp.uint32(0x7FEB352D)
    v = (v ^ (v >> 15)) * jnp.uint32(0x846CA68B)
    return v ^ (v >> 16)


def hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform uint32 bits of `shape` as a hash of each element's (row, column) index keyed by two words drawn from
    `key`: mix(mix(row ^ k0) + (column ^ k1)), rows the flattened leading axes."""
    k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
    rows = jnp.arange(math.prod(shape[:-1]), dtype=jnp.uint32).reshape(*shape[:-1], 1)
    cols = jnp.arange(shape[-1], dtype=jnp.uint32)
    return _mix32(_mix32(rows ^ k0) + (cols ^ k1))


class Dropout(nnx.Dropout):
    """nnx.Dropout (same rate, scaling, rng stream and train / eval switch) whose mask compares hashed bits
    (`hash_bits`) with the rate instead of drawing threefry bits per element. Why: threefry's ~20 rounds per draw
    made the masks compute-bound: 4.3 ms of the 113 ms training step at 128 px, batch 64, on an H100 (3.0 ms at the
    top level alone, bench/RESULTS.md stop 28) for what is a memory-bound select; with two integer finalisers per
    element the top level's masks take 1.4 ms, at the card's copy rate (stop 29). The key still comes from the rng
    stream, reseeded every training step."""

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.deterministic or self.rate == 0.0:
            return x
        if self.rate == 1.0 or math.prod(x.shape[:-1]) >= 2 ** 32:   # nothing kept; row indices past 32 bits
            return super().__call__(x)
        keep = 1.0 - self.rate
        bits = hash_bits(self.rngs(), x.shape)
        return jnp.where(bits >= jnp.uint32(round(self.rate * 2 ** 32)), x / keep, jnp.zeros_like(x))


class ResBlock(nnx.Module):
    """DiffAE ResBlock.

    Conditioned (UNet): h = conv(silu(GN(x))); h = GN(h) * (1 + t_scale) + t_shift; h *= (1 + z_scale);
    out = skip(x) + zero_conv(dropout(silu(h))). Unconditioned (encoder): skip(x) + conv(silu(GN(x))),
    one conv only. With `resample`, h (after the first SiLU) and x are up/down-sampled.
    """

    def __init__(self, cin: int, cout: int, *, emb_dim: int | None, cond_dim: int | None, dropout: float,
                 resample: str | None = None, dtype=jnp.float32, rngs: nnx.Rngs):
        self.resample = resample
        self.in_norm = GroupNorm32(cin, rngs=rngs)
        self.in_conv = conv(cin, cout, 3, dtype=dtype, rngs=rngs)
        self.conditioned = emb_dim is not None
        if self.conditioned:
            self.emb = linear(emb_dim, 2 * cout, dtype=dtype, rngs=rngs)
            self.cond = linear(cond_dim, cout, dtype=dtype, rngs=rngs)
            self.out_norm = GroupNorm32(cout, rngs=rngs)
            self.dropout = Dropout(dropout, rngs=rngs)
            self.out_conv = conv(cout, cout, 3, dtype=dtype, rngs=rngs, zero=True)
        self.skip = conv(cin, cout, 1, dtype=dtype, rngs=rngs) if cin != cout else None

    def __call__(self, x: jax.Array | tuple[jax.Array, jax.Array], emb: jax.Array | None = None,
                 cond: jax.Array | None = None) -> jax.Array:
        """x: the input, or (h, skip) to be concatenated (the UNet decoder)."""
        if isinstance(x, tuple):   # the decoder: cin (h's + skip's channels) != cout in every UNet layout
            h, residual = self.in_norm.concat(*x, self.skip, silu=True)
        else:
            if self.resample:   # both paths re-sampled by the normalisation's pass
                h, x = self.in_norm.resample(x, self.resample, silu=True)
            else:
                h = self.in_norm(x, silu=True)
            residual = x if self.skip is None else self.skip(x)
        h = self.in_conv(h)
        if self.conditioned:
            t_scale, t_shift = jnp.split(self.emb(nnx.silu(emb)).astype(jnp.float32), 2, axis=-1)
            z_scale = 1 + self.cond(nnx.silu(cond)).astype(jnp.float32)
            # (GN(h) * (1 + t_scale) + t_shift) * (1 + z_scale), then SiLU, in one pass
            h = self.out_norm(h, scale=(1 + t_scale) * z_scale, shift=t_shift * z_scale, silu=True)
            h = self.out_conv(self.dropout(h))
        return residual + h


class AttentionBlock(nnx.Module):
    """Single-head self-attention over all positions (legacy QKV order), zero-initialised output."""

    def __init__(self, channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.norm = GroupNorm32(channels, rngs=rngs)
        self.qkv = linear(channels, 3 * channels, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(channels, channels, dtype=dtype, param_dtype=jnp.float32, kernel_init=zeros,
                               bias_init=zeros, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x).reshape(b, h * w, c)), 3, axis=-1)
        scale = 1 / math.sqrt(math.sqrt(c))
        logits = jnp.einsum("bqc,bkc->bqk", q * scale, k * scale).astype(jnp.float32)
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bqk,bkc->bqc", attn, v)
        return x + self.proj(out).reshape(b, h, w, c)
