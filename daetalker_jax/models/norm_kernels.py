"""GroupNorm's memory-bound passes as Pallas kernels on GPUs: per-channel moments, y = silu(x * a + b), and two
variants of the latter for the UNet decoder: one reads [h, skip] as two inputs and writes both concatenations, one
writes the 2x up-sampled result and the up-sampled input.

Why: at 128 px the DDIM step spent ~42% of its time in these passes, which XLA's fusions run at 2.0-3.1 TB/s on an
H200 (bench/kernel_time.py), while the convolutions already run at ~87% of the bf16 peak. The Pallas (Triton)
kernels stream at 3.4-3.7 TB/s on the same shapes (bench/norm_kernels.py); end to end the 128 px DDIM step
is ~10% faster than with XLA alone and the 256 px one ~8% (bench/RESULTS.md, stops 21-22). All passes have
analytic gradients in plain JAX (custom_vjp), so training uses them too, and custom_partitioning keeps a batch
sharded over several devices on its devices. Shapes the kernels were not measured on (channels other than 128 or
256, positions not divisible by the tiles) and other backends use the same maths in jnp, which XLA fuses.
"""

from __future__ import annotations

import functools

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
SPLITS = 16   # programs per image for the moments
WARPS = 8


def pallas_ok(x: jax.Array) -> bool:
    """Whether `x` (B, P, C) gets the Pallas kernels: a GPU and a measured tile shape."""
    _, p, c = x.shape
    return jax.default_backend() == "gpu" and c in (128, 256) and p % (ROWS * SPLITS) == 0


# Shardy rules of the four kernels: the batch axis b passes through, positions and channels stay whole.
_RULES = {"moments": "b p c -> b c, b c", "affine": "b p c, b c, b c -> b p c",
          "concat": "b p c, b p c, b d, b d -> b p d, b p d",
          "upsample": "b h w c, b c, b c -> b u v c, b u v c"}
_WHOLE = {kind: tuple(dict.fromkeys(f for f in rule.replace(",", " ").split() if f not in ("b", "->")))
          for kind, rule in _RULES.items()}   # in order of appearance, as Shardy wants


@functools.cache
def _kernel(kind: str, silu: bool = False, interpret: bool = False):
    """The Pallas kernel `kind`; on several devices wrapped so that each runs it on its own images. Why: XLA
    cannot partition a Pallas call itself and would gather a batch sharded over the 'data' axis onto every
    device; with custom_partitioning it keeps the batch's sharding (any mesh, any device count)."""
    def moments(x):
        return moments_pallas(x, interpret=interpret)

    def affine(x, a, b):
        return affine_pallas(x, a, b, silu, interpret=interpret)

    def concat(h, s, a, b):
        return concat_affine_pallas(h, s, a, b, silu, interpret=interpret)

    def upsample(x, a, b):
        return upsample_affine_pallas(x, a, b, silu, interpret=interpret)

    fn = {"moments": moments, "affine": affine, "concat": concat, "upsample": upsample}[kind]
    if jax.device_count() == 1:
        return fn

    def partition(mesh, arg_shapes, result_shape):
        spec = arg_shapes[0].sharding.spec
        batch = NamedSharding(mesh, PartitionSpec(spec[0] if len(spec) else None))
        return mesh, fn, jax.tree.map(lambda _: batch, result_shape), jax.tree.map(lambda _: batch, arg_shapes)

    def infer(mesh, arg_shapes, result_shape):
        return partition(mesh, arg_shapes, result_shape)[2]

    wrapped = custom_partitioning(fn)
    wrapped.def_partition(partition, infer_sharding_from_operands=infer, sharding_rule=_RULES[kind],
                          need_replication_factors=_WHOLE[kind])
    return wrapped


def _params(warps: int | None) -> plgpu.CompilerParams | None:
    return plgpu.CompilerParams(num_warps=warps) if warps else None


def moments_pallas(x: jax.Array, *, rows: int = ROWS, splits: int = SPLITS, warps: int | None = WARPS,
                   interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """Grid (image, split): each program sums `rows` x C tiles over P / splits positions."""
    b, p, c = x.shape
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
                            out_specs=(part, part), compiler_params=_params(warps), interpret=interpret)(x)
    return s1.sum(1), s2.sum(1)


def moments_jnp(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    xf = x.astype(jnp.float32)
    return xf.sum(1), jnp.square(xf).sum(1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def channel_moments(x: jax.Array, interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """Per (image, channel) sum and sum of squares over the positions of x (B, P, C), in fp32."""
    return _kernel("moments", interpret=interpret)(x) if interpret or pallas_ok(x) else moments_jnp(x)


def _moments_fwd(x, interpret):
    return channel_moments(x, interpret), x


def _moments_bwd(interpret, x, grads):
    g1, g2 = grads
    return ((g1[:, None] + 2 * x.astype(jnp.float32) * g2[:, None]).astype(x.dtype),)


channel_moments.defvjp(_moments_fwd, _moments_bwd)


def _silu_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> jax.Array:
    """x (..., P, C) * a + b with a, b (..., C), in fp32, then SiLU if `silu` (the kernels' and jnp's maths)."""
    y = x.astype(jnp.float32) * a[..., None, :] + b[..., None, :]
    return y * jax.nn.sigmoid(y) if silu else y


def affine_pallas(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool, *, rows: int = ROWS,
                  warps: int | None = WARPS, interpret: bool = False) -> jax.Array:
    """Grid (image, tile of `rows` positions)."""
    n, p, c = x.shape

    def kernel(x_ref, a_ref, b_ref, o_ref):
        o_ref[...] = _silu_affine(x_ref[...], a_ref[...], b_ref[...], silu).astype(o_ref.dtype)

    tile = pl.BlockSpec((None, rows, c), lambda i, j: (i, j, 0))
    per_image = pl.BlockSpec((None, c), lambda i, j: (i, 0))
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype), grid=(n, p // rows),
                          in_specs=[tile, per_image, per_image], out_specs=tile, compiler_params=_params(warps),
                          interpret=interpret)(x, a, b)


def affine_jnp(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> jax.Array:
    return _silu_affine(x, a, b, silu).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def channel_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool, interpret: bool = False) -> jax.Array:
    """y = x * a + b per (image, channel), then SiLU if `silu`; fp32 maths, returned in x's dtype.
    x (B, P, C); a, b (B, C) fp32."""
    if interpret or pallas_ok(x):
        return _kernel("affine", silu, interpret)(x, a, b)
    return affine_jnp(x, a, b, silu)


def _affine_fwd(x, a, b, silu, interpret):
    return channel_affine(x, a, b, silu, interpret), (x, a, b)


def _affine_grads(x, a, b, g, silu):
    """(dx in fp32, da, db) of y = [silu](x * a + b)."""
    xf, gf = x.astype(jnp.float32), g.astype(jnp.float32)
    if silu:
        u = _silu_affine(xf, a, b, silu=False)
        sig = jax.nn.sigmoid(u)
        gf = gf * sig * (1 + u * (1 - sig))
    return gf * a[:, None], (gf * xf).sum(1), gf.sum(1)


def _affine_bwd(silu, interpret, res, g):
    x, a, b = res
    dx, da, db = _affine_grads(x, a, b, g, silu)
    return dx.astype(x.dtype), da, db


channel_affine.defvjp(_affine_fwd, _affine_bwd)


# The UNet's decoder normalises concatenations [h, skip] and also needs the raw concatenation (its 1x1 skip
# convolution). One kernel reads both parts once and writes both concatenations; XLA's concatenation copy, and the
# statistics pass over it, go away (the parts' moments are taken separately, and the skip's are the ones its
# encoder consumer already computed: XLA merges the identical kernel calls).

def concat_ok(h: jax.Array, s: jax.Array) -> bool:
    """Whether two parts (B, P, c) of equal measured width get the two-input Pallas kernel."""
    return h.shape == s.shape and pallas_ok(h)


def concat_affine_pallas(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, silu: bool, *, rows: int = ROWS,
                         warps: int | None = WARPS, interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """(affine of [h, s], [h, s]) for h, s (B, P, c); grid (image, tile of `rows` positions)."""
    n, p, c = h.shape

    def kernel(h_ref, s_ref, a_ref, b_ref, y_ref, r_ref):
        for part, ref in enumerate((h_ref, s_ref)):
            x, cols = ref[...], pl.ds(part * c, c)
            r_ref[:, cols] = x
            y_ref[:, cols] = _silu_affine(x, a_ref[cols], b_ref[cols], silu).astype(y_ref.dtype)

    tile = pl.BlockSpec((None, rows, c), lambda i, j: (i, j, 0))
    wide = pl.BlockSpec((None, rows, 2 * c), lambda i, j: (i, j, 0))
    per_image = pl.BlockSpec((None, 2 * c), lambda i, j: (i, 0))
    out = jax.ShapeDtypeStruct((n, p, 2 * c), h.dtype)
    return pl.pallas_call(kernel, out_shape=(out, out), grid=(n, p // rows),
                          in_specs=[tile, tile, per_image, per_image], out_specs=(wide, wide),
                          compiler_params=_params(warps), interpret=interpret)(h, s, a, b)


def concat_affine_jnp(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array,
                      silu: bool) -> tuple[jax.Array, jax.Array]:
    raw = jnp.concatenate([h, s], axis=-1)
    return affine_jnp(raw, a, b, silu), raw


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def concat_affine(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, silu: bool,
                  interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """([silu]([h, s] * a + b), [h, s]) per (image, channel); h, s (B, P, c_h / c_s), a, b (B, c_h + c_s) fp32."""
    if interpret or concat_ok(h, s):
        return _kernel("concat", silu, interpret)(h, s, a, b)
    return concat_affine_jnp(h, s, a, b, silu)


def _concat_fwd(h, s, a, b, silu, interpret):
    return concat_affine(h, s, a, b, silu, interpret), (h, s, a, b)


def _concat_bwd(silu, interpret, res, grads):
    h, s, a, b = res
    g_y, g_raw = grads
    dx, da, db = _affine_grads(jnp.concatenate([h, s], axis=-1), a, b, g_y, silu)
    dx = dx + g_raw.astype(jnp.float32)
    c = h.shape[-1]
    return dx[..., :c].astype(h.dtype), dx[..., c:].astype(s.dtype), da, db


concat_affine.defvjp(_concat_fwd, _concat_bwd)


# The UNet's up-ResBlocks normalise x, then up-sample (nearest, 2x) both the result and x itself (the residual path).
# One kernel reads x once and writes both up-sampled arrays; XLA's two broadcast copies (~2.1 TB/s) go away.

def _up2(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x up-sampling of (B, H, W, C)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def upsample_ok(x: jax.Array) -> bool:
    """Whether `x` (B, H, W, C) gets the up-sampling Pallas kernel (the shapes measured: rows of 32 or 64)."""
    return jax.default_backend() == "gpu" and x.shape[-1] in (128, 256) and x.shape[2] in (32, 64)


def upsample_affine_pallas(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool, *, warps: int | None = WARPS,
                           interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """(affine of x, x), both up-sampled 2x, for x (B, H, W, C); grid (image, row): each program writes its row's
    2 x 2 copies into the outputs viewed as (B, H, 2, W, 2, C), which is (B, 2H, 2W, C) in memory."""
    n, h, w, c = x.shape

    def kernel(x_ref, a_ref, b_ref, y_ref, r_ref):
        x = x_ref[...]
        y = _silu_affine(x, a_ref[...], b_ref[...], silu).astype(y_ref.dtype)
        for i in range(2):
            for j in range(2):
                y_ref[i, :, j, :] = y
                r_ref[i, :, j, :] = x

    row = pl.BlockSpec((None, None, w, c), lambda i, j: (i, j, 0, 0))
    per_image = pl.BlockSpec((None, c), lambda i, j: (i, 0))
    quad = pl.BlockSpec((None, None, 2, w, 2, c), lambda i, j: (i, j, 0, 0, 0, 0))
    out = jax.ShapeDtypeStruct((n, h, 2, w, 2, c), x.dtype)
    y, raw = pl.pallas_call(kernel, out_shape=(out, out), grid=(n, h), in_specs=[row, per_image, per_image],
                            out_specs=(quad, quad), compiler_params=_params(warps), interpret=interpret)(x, a, b)
    return y.reshape(n, 2 * h, 2 * w, c), raw.reshape(n, 2 * h, 2 * w, c)


def upsample_affine_jnp(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> tuple[jax.Array, jax.Array]:
    n, c = x.shape[0], x.shape[-1]
    return _up2(affine_jnp(x.reshape(n, -1, c), a, b, silu).reshape(x.shape)), _up2(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def upsample_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool,
                    interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """([silu](x * a + b), x), both up-sampled 2x (nearest), per (image, channel); x (B, H, W, C), a, b (B, C) fp32."""
    if interpret or upsample_ok(x):
        return _kernel("upsample", silu, interpret)(x, a, b)
    return upsample_affine_jnp(x, a, b, silu)


def _upsample_fwd(x, a, b, silu, interpret):
    return upsample_affine(x, a, b, silu, interpret), (x, a, b)


def _upsample_bwd(silu, interpret, res, grads):
    x, a, b = res
    n, h, w, c = x.shape
    g_y, g_raw = (g.astype(jnp.float32).reshape(n, h, 2, w, 2, c).sum((2, 4)) for g in grads)
    dx, da, db = _affine_grads(x.reshape(n, -1, c), a, b, g_y.reshape(n, -1, c), silu)
    return (dx.reshape(x.shape) + g_raw).astype(x.dtype), da, db


upsample_affine.defvjp(_upsample_fwd, _upsample_bwd)
