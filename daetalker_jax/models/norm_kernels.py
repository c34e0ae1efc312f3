"""GroupNorm's two memory-bound passes as Pallas kernels on GPUs: per-channel moments, and y = silu(x * a + b).

Why: at 128 px the DDIM step spends ~42% of its time in these passes, which XLA's fusions run at 2.1-2.8 TB/s on
an H200 (bench/kernel_time.py); the convolutions already run at ~87% of the bf16 peak. The Pallas (Triton) kernels
stream at ~3.1-3.6 TB/s on the same shapes (bench/norm_kernels.py); end to end +5-6% on the 128 px DDIM step
and +1.8% at 256 px (bench/RESULTS.md, stop 21). Both passes have analytic gradients in plain
JAX (custom_vjp), so training uses them too. Shapes the kernels were not measured on (channels other than 128 or
256, or positions not divisible by the tiles) and other backends use the same maths in jnp, which XLA fuses.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

ROWS = 32   # positions per tile (bench/norm_kernels.py: 32 beat 64 and 128 at 128 and 256 channels)


def _splits(channels: int) -> int:
    return 4 if channels <= 128 else 8   # programs per image for the moments (bench/norm_kernels.py)


def pallas_ok(x: jax.Array) -> bool:
    """Whether `x` (B, P, C) gets the Pallas kernels: one GPU (XLA does not partition a Pallas call, so a batch
    sharded over several devices would be gathered onto each; that needs a shard_map around the model) and a
    measured tile shape."""
    _, p, c = x.shape
    return (jax.default_backend() == "gpu" and jax.device_count() == 1 and c in (128, 256)
            and p % (ROWS * _splits(c)) == 0)


def moments_pallas(x: jax.Array, *, rows: int = ROWS, splits: int | None = None,
                   interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """Grid (image, split): each program sums `rows` x C tiles over P / splits positions."""
    b, p, c = x.shape
    splits = splits or _splits(c)
    chunk = p // splits

    def kernel(x_ref, s1_ref, s2_ref):
        def body(i, acc):
            tile = x_ref[pl.ds(i * rows, rows), :].astype(jnp.float32)
            return acc[0] + tile, acc[1] + tile * tile

        zero = jnp.zeros((rows, c), jnp.float32)
        s1, s2 = jax.lax.fori_loop(0, chunk // rows, body, (zero, zero))
        s1_ref[...] = s1.sum(0)
        s2_ref[...] = s2.sum(0)

    out = jax.ShapeDtypeStruct((b, splits, c), jnp.float32)
    part = pl.BlockSpec((None, None, c), lambda i, j: (i, j, 0))
    s1, s2 = pl.pallas_call(kernel, out_shape=(out, out), grid=(b, splits),
                            in_specs=[pl.BlockSpec((None, chunk, c), lambda i, j: (i, j, 0))],
                            out_specs=(part, part), interpret=interpret)(x)
    return s1.sum(1), s2.sum(1)


def moments_jnp(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    xf = x.astype(jnp.float32)
    return xf.sum(1), jnp.square(xf).sum(1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def channel_moments(x: jax.Array, interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """Per (image, channel) sum and sum of squares over the positions of x (B, P, C), in fp32."""
    return moments_pallas(x, interpret=interpret) if interpret or pallas_ok(x) else moments_jnp(x)


def _moments_fwd(x, interpret):
    return channel_moments(x, interpret), x


def _moments_bwd(interpret, x, grads):
    g1, g2 = grads
    return ((g1[:, None] + 2 * x.astype(jnp.float32) * g2[:, None]).astype(x.dtype),)


channel_moments.defvjp(_moments_fwd, _moments_bwd)


def affine_pallas(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool, *, rows: int = ROWS,
                  interpret: bool = False) -> jax.Array:
    """Grid (image, tile of `rows` positions)."""
    n, p, c = x.shape

    def kernel(x_ref, a_ref, b_ref, o_ref):
        y = x_ref[...].astype(jnp.float32) * a_ref[...][None] + b_ref[...][None]
        o_ref[...] = (y * jax.nn.sigmoid(y) if silu else y).astype(o_ref.dtype)

    tile = pl.BlockSpec((None, rows, c), lambda i, j: (i, j, 0))
    per_image = pl.BlockSpec((None, c), lambda i, j: (i, 0))
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(n, p // rows),
                          in_specs=[tile, per_image, per_image], out_specs=tile, interpret=interpret)(x, a, b)


def affine_jnp(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> jax.Array:
    y = x.astype(jnp.float32) * a[:, None] + b[:, None]
    return (y * jax.nn.sigmoid(y) if silu else y).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def channel_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool, interpret: bool = False) -> jax.Array:
    """y = x * a + b per (image, channel), then SiLU if `silu`; fp32 maths, returned in x's dtype.
    x (B, P, C); a, b (B, C) fp32."""
    return affine_pallas(x, a, b, silu, interpret=interpret) if interpret or pallas_ok(x) else affine_jnp(x, a, b, silu)


def _affine_fwd(x, a, b, silu, interpret):
    return channel_affine(x, a, b, silu, interpret), (x, a, b)


def _affine_bwd(silu, interpret, res, g):
    x, a, b = res
    xf, gf = x.astype(jnp.float32), g.astype(jnp.float32)
    if silu:
        u = xf * a[:, None] + b[:, None]
        sig = jax.nn.sigmoid(u)
        gf = gf * sig * (1 + u * (1 - sig))
    return (gf * a[:, None]).astype(x.dtype), (gf * xf).sum(1), gf.sum(1)


channel_affine.defvjp(_affine_fwd, _affine_bwd)
