"""GroupNorm's memory-bound passes as Pallas kernels on GPUs: per-channel moments and y = silu(x * a + b), with
their analytic gradients, and what every GroupNorm kernel shares (tiles, batch partitioning); the UNet's fused
variants of these passes are in models/unet_kernels.py.

Why: at 128 px the DDIM step spent ~42% of its time in these passes, which XLA's fusions run at 2.0-3.1 TB/s on an
H200 (bench/kernel_time.py), while the convolutions already run at ~87% of the bf16 peak. The Pallas (Triton)
kernels stream at 3.4-3.7 TB/s on the same shapes (bench/norm_kernels.py); end to end the 128 px DDIM step
is ~10% faster than with XLA alone and the 256 px one ~8% (bench/RESULTS.md, stops 21-24). All passes have
analytic gradients (custom_vjp), so training uses them too, and custom_partitioning keeps a batch
sharded over several devices on its devices. Shapes the kernels do not tile (channels not in blocks of 128,
positions not in tiles of ROWS) and other backends use the same maths in jnp, which XLA fuses.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning
from jax.experimental.pallas import triton as plgpu
from jax.sharding import NamedSharding, PartitionSpec

# Tiles, from bench/norm_kernels.py on an H200 (RESULTS.md): 32 positions per tile beat 64 and 128; 8 warps per
# program beat Triton's default 4 (apply 3.51 -> 3.64 TB/s at 128 channels, moments 3.07 -> 3.58 at 256 with 16
# programs per image instead of 8).
ROWS = 32     # positions per tile
SPLITS = 16   # programs per image for the moments (fewer where an image has fewer tiles)
WARPS = 8


def pallas_ok(x: jax.Array) -> bool:
    """Whether `x` (B, P, C) gets the Pallas kernels: a GPU, channels in blocks of 128, positions in tiles."""
    _, p, c = x.shape
    return jax.default_backend() == "gpu" and c % 128 == 0 and p % ROWS == 0


def channel_block(*widths: int) -> int:
    """Channels per program: 256 where every width allows it (the measured level-0 tile), else 128 (Triton's
    blocks are powers of two: 384 or 640 channels take 3 or 5 programs per tile of positions)."""
    return 256 if all(w % 256 == 0 for w in widths) else 128


@functools.cache
def _partitioned(impl, rule: str, options: tuple):
    def fn(*arrays):
        return impl(*arrays, **dict(options))

    if jax.device_count() == 1:
        return fn

    batched = [operand.split()[0] == "b" for operand in rule.split("->")[0].split(",")]
    # the factors other than b, in order of appearance, as Shardy wants
    whole = tuple(dict.fromkeys(f for f in rule.replace(",", " ").split() if f not in ("b", "->")))

    def partition(mesh, arg_shapes, result_shape):
        spec = arg_shapes[0].sharding.spec
        batch = NamedSharding(mesh, PartitionSpec(spec[0] if len(spec) else None))
        args = tuple(batch if b else NamedSharding(mesh, PartitionSpec()) for b in batched)
        return mesh, fn, jax.tree.map(lambda _: batch, result_shape), args

    def infer(mesh, arg_shapes, result_shape):
        return partition(mesh, arg_shapes, result_shape)[2]

    wrapped = custom_partitioning(fn)
    wrapped.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=rule,
                          need_replication_factors=whole)
    return wrapped


def batch_partitioned(impl, rule: str, **options):
    """The Pallas kernel `impl` with its keyword `options` bound; on several devices wrapped so that each runs it on
    its own images. Why: XLA cannot partition a Pallas call itself and would gather a batch sharded over the 'data'
    axis onto every device; with custom_partitioning it keeps the batch's sharding (any mesh, any device count).
    `rule` is its Shardy rule: the batch axis b passes through, positions and channels stay whole, operands without b
    (the matrices) are replicated."""
    return _partitioned(impl, rule, tuple(sorted(options.items())))


def saving_inputs(fn, count: int):
    """The forward rule of custom_vjp `fn`: its output, with its first `count` (differentiable) inputs saved for the
    backward rule."""
    def fwd(*args):
        return fn(*args), args[:count]

    return fwd


def compiler_params(warps: int | None, stages: int | None = None) -> plgpu.CompilerParams | None:
    return plgpu.CompilerParams(num_warps=warps, num_stages=stages) if warps or stages else None


def moments_pallas(x: jax.Array, *, rows: int = ROWS, splits: int = SPLITS, warps: int | None = WARPS,
                   interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """Grid (image, split, channel block): each program sums `rows` x block tiles over P / splits positions."""
    b, p, c = x.shape
    splits = math.gcd(splits, p // rows)
    chunk, cb = p // splits, channel_block(c)

    def kernel(x_ref, s1_ref, s2_ref):
        def body(i, acc):
            tile = x_ref[pl.ds(i * rows, rows), :].astype(jnp.float32)
            return acc[0] + tile, acc[1] + tile * tile

        zero = jnp.zeros((rows, cb), jnp.float32)
        s1, s2 = jax.lax.fori_loop(0, chunk // rows, body, (zero, zero))
        s1_ref[...] = s1.sum(0)
        s2_ref[...] = s2.sum(0)

    out = jax.ShapeDtypeStruct((b, splits, c), jnp.float32)
    part = pl.BlockSpec((None, None, cb), lambda i, j, k: (i, j, k))
    s1, s2 = pl.pallas_call(kernel, out_shape=(out, out), grid=(b, splits, c // cb),
                            in_specs=[pl.BlockSpec((None, chunk, cb), lambda i, j, k: (i, j, k))],
                            out_specs=(part, part), compiler_params=compiler_params(warps), interpret=interpret,
                            name="groupnorm_moments")(x)
    return s1.sum(1), s2.sum(1)


def moments_jnp(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    xf = x.astype(jnp.float32)
    return xf.sum(1), jnp.square(xf).sum(1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def channel_moments(x: jax.Array, interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """Per (image, channel) sum and sum of squares over the positions of x (B, P, C), in fp32."""
    if interpret or pallas_ok(x):
        return batch_partitioned(moments_pallas, "b p c -> b c, b c", interpret=interpret)(x)
    return moments_jnp(x)


def _moments_bwd(interpret, res, grads):
    (x,), (g1, g2) = res, grads
    return ((g1[:, None] + 2 * x.astype(jnp.float32) * g2[:, None]).astype(x.dtype),)


channel_moments.defvjp(saving_inputs(channel_moments, 1), _moments_bwd)


def silu_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> jax.Array:
    """x (..., P, C) * a + b with a, b (..., C), in fp32, then SiLU if `silu` (the kernels' and jnp's maths)."""
    y = x.astype(jnp.float32) * a[..., None, :] + b[..., None, :]
    return y * jax.nn.sigmoid(y) if silu else y


def affine_pallas(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool, *, rows: int = ROWS,
                  warps: int | None = WARPS, interpret: bool = False) -> jax.Array:
    """Grid (image, tile of `rows` positions, channel block)."""
    n, p, c = x.shape
    cb = channel_block(c)

    def kernel(x_ref, a_ref, b_ref, o_ref):
        o_ref[...] = silu_affine(x_ref[...], a_ref[...], b_ref[...], silu).astype(o_ref.dtype)

    tile = pl.BlockSpec((None, rows, cb), lambda i, j, k: (i, j, k))
    per_image = pl.BlockSpec((None, cb), lambda i, j, k: (i, k))
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(n, p // rows, c // cb),
                          in_specs=[tile, per_image, per_image], out_specs=tile, compiler_params=compiler_params(warps),
                          interpret=interpret, name="groupnorm_apply")(x, a, b)


def affine_jnp(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> jax.Array:
    return silu_affine(x, a, b, silu).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def channel_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool, interpret: bool = False) -> jax.Array:
    """y = x * a + b per (image, channel), then SiLU if `silu`; fp32 maths, returned in x's dtype.
    x (B, P, C); a, b (B, C) fp32."""
    if interpret or pallas_ok(x):
        return batch_partitioned(affine_pallas, "b p c, b c, b c -> b p c", silu=silu, interpret=interpret)(x, a, b)
    return affine_jnp(x, a, b, silu)


def affine_cotangent(xf: jax.Array, g: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> jax.Array:
    """The cotangent of u = x * a + b in fp32 given g, that of y = [silu](u); xf (..., P, C) fp32, a, b (..., C)."""
    gf = g.astype(jnp.float32)
    if not silu:
        return gf
    u = silu_affine(xf, a, b, silu=False)
    sig = jax.nn.sigmoid(u)
    return gf * sig * (1 + u * (1 - sig))


def affine_grads(x, a, b, g, silu):
    """(dx in fp32, da, db) of y = [silu](x * a + b)."""
    xf = x.astype(jnp.float32)
    gu = affine_cotangent(xf, g, a, b, silu)
    return gu * a[:, None], (gu * xf).sum(1), gu.sum(1)


def _affine_bwd(silu, interpret, res, g):
    x, a, b = res
    dx, da, db = affine_grads(x, a, b, g, silu)
    return dx.astype(x.dtype), da, db


channel_affine.defvjp(saving_inputs(channel_affine, 3), _affine_bwd)
