"""The UNet's fused GroupNorm passes (Pallas kernels on GPUs, on top of models/norm_kernels.py): for the decoder, one
reads [h, skip] as two inputs and writes the normalised and the raw concatenation, or the raw one's 1x1 projection
(the ResBlock's skip convolution), and one pass computes that concatenation's gradients; the up-ResBlocks' pass writes
the 2x up-sampled result and the up-sampled input; the UNet's output pass multiplies y by a narrow matrix (the
3-channel output convolution's taps). The down-ResBlocks' pass stays in jnp: XLA fuses it into one pass.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from daetalker_jax.models.norm_kernels import (ROWS, SPLITS, WARPS, affine_cotangent, affine_grads, affine_jnp,
                                               batch_partitioned, channel_block, compiler_params, pallas_ok,
                                               saving_inputs, silu_affine)

HEAD_ROWS, HEAD_WARPS = 64, 4   # the output head's matmul: 0.44 ms with its sum, 0.55-1.21 with 32 / 128 rows, 8 warps
PROJECT_ROWS, PROJECT_TILES, PROJECT_WARPS = 128, 4, 8   # the decoder's concatenation + projection: 0.79 ms, 0.90-2.4
                                                          # with 64 / 128 rows x 1-16 tiles, 4 / 8 / 16 warps


# The UNet's decoder normalises concatenations [h, skip] and also needs the raw concatenation (its 1x1 skip
# convolution). One kernel reads both parts once and writes both concatenations; XLA's concatenation copy, and the
# statistics pass over it, go away (the parts' moments are taken separately, and the skip's are the ones its
# encoder consumer already computed: XLA merges the identical kernel calls).

def concat_ok(h: jax.Array, s: jax.Array) -> bool:
    """Whether two parts (B, P, c_h / c_s) get the two-input Pallas kernel."""
    return h.shape[:2] == s.shape[:2] and pallas_ok(h) and pallas_ok(s)


def _part_specs(block: tuple, first: int) -> tuple[pl.BlockSpec, pl.BlockSpec]:
    """BlockSpecs of h and of s for a grid whose third axis walks the concatenation's channel blocks, the first
    `first` of them h's: the other part's block index is clamped, so a program of h's blocks neither reads nor
    writes s's, and vice versa."""
    return (pl.BlockSpec(block, lambda i, j, k: (i, j, jnp.minimum(k, first - 1))),
            pl.BlockSpec(block, lambda i, j, k: (i, j, jnp.maximum(k - first, 0))))


def _per_part(first: int, fn, h_refs: tuple, s_refs: tuple) -> None:
    """In a kernel on that grid: fn(*h_refs) in programs of h's channel blocks, fn(*s_refs) in those of s's."""
    in_h = pl.program_id(2) < first
    pl.when(in_h)(lambda: fn(*h_refs))
    pl.when(jnp.logical_not(in_h))(lambda: fn(*s_refs))


def concat_affine_pallas(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, silu: bool, *, rows: int = ROWS,
                         warps: int | None = WARPS, interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """(affine of [h, s], [h, s]) for h, s (B, P, c_h / c_s); grid (image, tile of `rows` positions, channel block
    of the concatenation): a program reads its block from h or from s and writes it to both outputs."""
    n, p, ch = h.shape
    cb = channel_block(ch, s.shape[-1])
    first = ch // cb   # blocks from h

    def kernel(h_ref, s_ref, a_ref, b_ref, y_ref, r_ref):
        def copy(ref):
            x = ref[...]
            r_ref[...] = x
            y_ref[...] = silu_affine(x, a_ref[...], b_ref[...], silu).astype(y_ref.dtype)

        _per_part(first, copy, (h_ref,), (s_ref,))

    from_h, from_s = _part_specs((None, rows, cb), first)
    tile = pl.BlockSpec((None, rows, cb), lambda i, j, k: (i, j, k))
    per_image = pl.BlockSpec((None, cb), lambda i, j, k: (i, k))
    width = ch + s.shape[-1]
    out = jax.ShapeDtypeStruct((n, p, width), h.dtype)
    return pl.pallas_call(kernel, out_shape=(out, out), grid=(n, p // rows, width // cb),
                          in_specs=[from_h, from_s, per_image, per_image], out_specs=(tile, tile),
                          compiler_params=compiler_params(warps), interpret=interpret,
                          name="groupnorm_concat")(h, s, a, b)


def concat_affine_jnp(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array,
                      silu: bool) -> tuple[jax.Array, jax.Array]:
    raw = jnp.concatenate([h, s], axis=-1)
    return affine_jnp(raw, a, b, silu), raw


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def concat_affine(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, silu: bool,
                  interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """([silu]([h, s] * a + b), [h, s]) per (image, channel); h, s (B, P, c_h / c_s), a, b (B, c_h + c_s) fp32."""
    if interpret or concat_ok(h, s):
        return batch_partitioned(concat_affine_pallas, "b p c, b p e, b d, b d -> b p d, b p d", silu=silu,
                                 interpret=interpret)(h, s, a, b)
    return concat_affine_jnp(h, s, a, b, silu)


def concat_grads_pallas(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, g_y: jax.Array, g_raw: jax.Array,
                        silu: bool, *, rows: int = ROWS, splits: int = SPLITS, warps: int | None = WARPS,
                        interpret: bool = False) -> tuple[jax.Array, ...]:
    """(dh, ds, da, db) of `concat_affine` given the cotangents g_y of the normalised and g_raw of the raw
    concatenation; grid (image, split, channel block of the concatenation) as the moments kernel: a program walks
    its positions in tiles of `rows`, writes the part's cotangent gu * a + g_raw (in the part's dtype) and sums
    gu * x and gu (fp32) for the per-image da and db. Why: differentiated by XLA (`concat_grads_jnp`) the backward
    rebuilt [h, skip] and wrote its cotangent in fp32; at 128 px, batch 64 on an H100 this pass takes 0.79 ms at the
    top level against 1.43, and the training step went from 112.9 to 103.9 ms with it and the hashed dropout
    (bench/RESULTS.md, stop 29)."""
    n, p, ch = h.shape
    cb = channel_block(ch, s.shape[-1])
    first = ch // cb   # blocks from h
    splits = math.gcd(splits, p // rows)
    chunk = p // splits

    def kernel(h_ref, s_ref, a_ref, b_ref, gy_ref, gr_ref, dh_ref, ds_ref, da_ref, db_ref):
        scale, offset = a_ref[...], b_ref[...]

        def part(x_ref, dx_ref):
            def body(i, acc):
                at = pl.ds(i * rows, rows)
                xf = x_ref[at, :].astype(jnp.float32)
                gu = affine_cotangent(xf, gy_ref[at, :], scale, offset, silu)
                dx_ref[at, :] = (gu * scale[None, :] + gr_ref[at, :].astype(jnp.float32)).astype(dx_ref.dtype)
                return acc[0] + gu * xf, acc[1] + gu

            zero = jnp.zeros((rows, cb), jnp.float32)
            s1, s2 = jax.lax.fori_loop(0, chunk // rows, body, (zero, zero))
            da_ref[...] = s1.sum(0)
            db_ref[...] = s2.sum(0)

        _per_part(first, part, (h_ref, dh_ref), (s_ref, ds_ref))

    of_h, of_s = _part_specs((None, chunk, cb), first)
    chunks = pl.BlockSpec((None, chunk, cb), lambda i, j, k: (i, j, k))
    per_image = pl.BlockSpec((None, cb), lambda i, j, k: (i, k))
    part_sums = pl.BlockSpec((None, None, cb), lambda i, j, k: (i, j, k))
    width = ch + s.shape[-1]
    sums = jax.ShapeDtypeStruct((n, splits, width), jnp.float32)
    dh, ds, da, db = pl.pallas_call(
        kernel, out_shape=(jax.ShapeDtypeStruct(h.shape, h.dtype), jax.ShapeDtypeStruct(s.shape, s.dtype), sums, sums),
        grid=(n, splits, width // cb), in_specs=[of_h, of_s, per_image, per_image, chunks, chunks],
        out_specs=(of_h, of_s, part_sums, part_sums), compiler_params=compiler_params(warps), interpret=interpret,
        name="groupnorm_concat_grads")(h, s, a, b, g_y, g_raw)
    return dh, ds, da.sum(1), db.sum(1)


def concat_grads_jnp(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, g_y: jax.Array, g_raw: jax.Array,
                     silu: bool) -> tuple[jax.Array, ...]:
    dx, da, db = affine_grads(jnp.concatenate([h, s], axis=-1), a, b, g_y, silu)
    dx = dx + g_raw.astype(jnp.float32)
    c = h.shape[-1]
    return dx[..., :c].astype(h.dtype), dx[..., c:].astype(s.dtype), da, db


def _concat_grads(silu, interpret, h, s, a, b, g_y, g_raw):
    if interpret or concat_ok(h, s):
        rule = "b p c, b p e, b d, b d, b p d, b p d -> b p c, b p e, b d, b d"
        return batch_partitioned(concat_grads_pallas, rule, silu=silu, interpret=interpret)(h, s, a, b, g_y, g_raw)
    return concat_grads_jnp(h, s, a, b, g_y, g_raw, silu)


def _concat_bwd(silu, interpret, res, grads):
    return _concat_grads(silu, interpret, *res, *grads)


concat_affine.defvjp(saving_inputs(concat_affine, 4), _concat_bwd)


# Where the decoder's parts are 128 + 128 channels projected to 128 (the 1x1 skip convolution of the two largest
# levels), one kernel reads both parts once, writes the normalised concatenation and multiplies the raw one by the
# projection: the raw concatenation (written by the kernel above, then read by cuDNN's 1x1 convolution) never reaches
# memory. Level-0 shapes, H200: 0.985 -> 0.785 ms. Wider parts stay with the kernel above: Triton's products here run
# far below the tensor cores' rate, and the weights of wider projections do not fit in shared memory.

def project_ok(h: jax.Array, s: jax.Array, w: jax.Array) -> bool:
    """Whether parts h, s (B, P, 128) and the projection w (256, 128) get the projecting kernel."""
    return (h.shape[:2] == s.shape[:2] and h.shape[-1] == s.shape[-1] == w.shape[1] == 128 and pallas_ok(h)
            and h.shape[1] % PROJECT_ROWS == 0)


def project_affine_pallas(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, w: jax.Array, bias: jax.Array,
                          silu: bool, *, rows: int = PROJECT_ROWS, tiles: int = PROJECT_TILES,
                          warps: int | None = PROJECT_WARPS, stages: int | None = None,
                          interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """(affine of [h, s], [h, s] @ w + bias) for h, s (B, P, c_h / c_s); grid (image, `tiles` tiles of `rows`
    positions): a program loads w once, then per tile takes its rows of h and s in blocks of 128 channels, writes each
    block normalised and adds its product with the block's rows of w to fp32 sums."""
    n, p, ch = h.shape
    width, o = ch + s.shape[-1], w.shape[1]
    tiles = math.gcd(tiles, p // rows)

    def kernel(h_ref, s_ref, a_ref, b_ref, w_ref, bias_ref, y_ref, o_ref):
        blocks = range(0, width, 128)
        weights = [w_ref[pl.ds(start, 128), :] for start in blocks]
        scales = [(a_ref[pl.ds(start, 128)], b_ref[pl.ds(start, 128)]) for start in blocks]
        init = jnp.zeros((rows, o), jnp.float32) + bias_ref[...].astype(jnp.float32)[None, :]

        def tile(t, carry):
            at, acc = pl.ds(t * rows, rows), init
            for start, wk, (ak, bk) in zip(blocks, weights, scales):
                ref, offset = (h_ref, start) if start < ch else (s_ref, start - ch)
                x = ref[at, pl.ds(offset, 128)]
                y_ref[at, pl.ds(start, 128)] = silu_affine(x, ak, bk, silu).astype(y_ref.dtype)
                acc += jnp.dot(x, wk, preferred_element_type=jnp.float32)
            o_ref[at, :] = acc.astype(o_ref.dtype)
            return carry

        jax.lax.fori_loop(0, tiles, tile, 0)

    def block(c):
        return pl.BlockSpec((None, rows * tiles, c), lambda i, j: (i, j, 0))

    def whole(*shape):
        return pl.BlockSpec(shape, lambda i, j: (0,) * len(shape))

    per_image = pl.BlockSpec((None, width), lambda i, j: (i, 0))
    out = (jax.ShapeDtypeStruct((n, p, width), h.dtype), jax.ShapeDtypeStruct((n, p, o), h.dtype))
    return pl.pallas_call(kernel, out_shape=out, grid=(n, p // (rows * tiles)),
                          in_specs=[block(ch), block(s.shape[-1]), per_image, per_image, whole(width, o), whole(o)],
                          out_specs=(block(width), block(o)), compiler_params=compiler_params(warps, stages),
                          interpret=interpret, name="groupnorm_project")(h, s, a, b, w, bias)


def project_affine_jnp(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, w: jax.Array, bias: jax.Array,
                       silu: bool) -> tuple[jax.Array, jax.Array]:
    raw = jnp.concatenate([h, s], axis=-1)
    proj = jnp.einsum("npc,co->npo", raw, w, preferred_element_type=jnp.float32) + bias
    return affine_jnp(raw, a, b, silu), proj.astype(h.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def project_affine(h: jax.Array, s: jax.Array, a: jax.Array, b: jax.Array, w: jax.Array, bias: jax.Array, silu: bool,
                   interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """([silu]([h, s] * a + b), [h, s] @ w + bias) per (image, channel); h, s (B, P, c_h / c_s), a, b (B, c_h + c_s)
    fp32, w (c_h + c_s, O) in h's dtype, bias (O,); the product with fp32 sums, both outputs in h's dtype."""
    if interpret or project_ok(h, s, w):
        rule = "b p c, b p e, b d, b d, d k, k -> b p d, b p k"
        return batch_partitioned(project_affine_pallas, rule, silu=silu, interpret=interpret)(h, s, a, b, w, bias)
    return project_affine_jnp(h, s, a, b, w, bias, silu)


def _project_bwd(silu, interpret, res, grads):
    """The concatenation's gradients (`_concat_grads`), with the projection's cotangent carried back to the raw
    concatenation as g_o @ w^T (in h's dtype), plus those of w (per part: [h, s] is never built) and the bias."""
    h, s, a, b, w, bias = res
    g_y, g_o = grads
    g_raw = jnp.einsum("npo,co->npc", g_o, w, preferred_element_type=jnp.float32).astype(h.dtype)
    dw = jnp.concatenate([jnp.einsum("npc,npo->co", x, g_o, preferred_element_type=jnp.float32) for x in (h, s)])
    return (*_concat_grads(silu, interpret, h, s, a, b, g_y, g_raw), dw.astype(w.dtype),
            g_o.astype(jnp.float32).sum((0, 1)).astype(bias.dtype))


project_affine.defvjp(saving_inputs(project_affine, 6), _project_bwd)


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
        y = silu_affine(x, a_ref[...], b_ref[...], silu).astype(y_ref.dtype)
        for i in range(2):
            for j in range(2):
                y_ref[i, :, j, :] = y
                r_ref[i, :, j, :] = x

    row = pl.BlockSpec((None, None, w, c), lambda i, j: (i, j, 0, 0))
    per_image = pl.BlockSpec((None, c), lambda i, j: (i, 0))
    quad = pl.BlockSpec((None, None, 2, w, 2, c), lambda i, j: (i, j, 0, 0, 0, 0))
    out = jax.ShapeDtypeStruct((n, h, 2, w, 2, c), x.dtype)
    y, raw = pl.pallas_call(kernel, out_shape=(out, out), grid=(n, h), in_specs=[row, per_image, per_image],
                            out_specs=(quad, quad), compiler_params=compiler_params(warps), interpret=interpret,
                            name="groupnorm_upsample")(x, a, b)
    return y.reshape(n, 2 * h, 2 * w, c), raw.reshape(n, 2 * h, 2 * w, c)


def upsample_affine_jnp(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> tuple[jax.Array, jax.Array]:
    n, c = x.shape[0], x.shape[-1]
    return _up2(affine_jnp(x.reshape(n, -1, c), a, b, silu).reshape(x.shape)), _up2(x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def upsample_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool,
                    interpret: bool = False) -> tuple[jax.Array, jax.Array]:
    """([silu](x * a + b), x), both up-sampled 2x (nearest), per (image, channel); x (B, H, W, C), a, b (B, C) fp32."""
    if interpret or upsample_ok(x):
        return batch_partitioned(upsample_affine_pallas, "b h w c, b c, b c -> b u v c, b u v c", silu=silu,
                                 interpret=interpret)(x, a, b)
    return upsample_affine_jnp(x, a, b, silu)


def _upsample_bwd(silu, interpret, res, grads):
    x, a, b = res
    n, h, w, c = x.shape
    g_y, g_raw = (g.astype(jnp.float32).reshape(n, h, 2, w, 2, c).sum((2, 4)) for g in grads)
    dx, da, db = affine_grads(x.reshape(n, -1, c), a, b, g_y.reshape(n, -1, c), silu)
    return (dx.reshape(x.shape) + g_raw).astype(x.dtype), da, db


upsample_affine.defvjp(saving_inputs(upsample_affine, 3), _upsample_bwd)


# The down-ResBlocks normalise x, then 2x2-average-pool both the result and x itself (the residual path). In jnp,
# XLA fuses the affine into the pooling and reads x once (0.21 ms at level 0, 100 images, H200; a Pallas kernel
# doing the same took 0.23 ms, and the previous full-size normalised array + two pooling passes 0.48 ms).

def downsample_affine(x: jax.Array, a: jax.Array, b: jax.Array, silu: bool) -> tuple[jax.Array, jax.Array]:
    """([silu](x * a + b), x), both 2x2-average-pooled in fp32, per (image, channel); x (B, H, W, C), a, b (B, C)."""
    n, h, w, c = x.shape

    def pool(v):
        return v.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).astype(x.dtype)

    return pool(silu_affine(x.reshape(n, -1, c), a, b, silu).reshape(x.shape)), pool(x.astype(jnp.float32))


# The UNet's output: silu(GN(h)) into a 3x3 convolution with 3 output channels, which cuDNN runs at ~1/4 of its
# input-read speed. Instead one pass normalises h and multiplies it by the 9 taps' weights (C x 9 * 3, padded to
# 32 columns); the caller sums the 9 shifted tap outputs (layers.GroupNorm32.narrow_conv).

def matmul_ok(x: jax.Array, w: jax.Array) -> bool:
    """Whether x (B, P, C) @ w (C, K) gets the Pallas kernel: a program holds whole rows of x, so C must be a
    power of two (Triton's blocks), as must K."""
    return pallas_ok(x) and x.shape[-1] in (128, 256) and x.shape[1] % HEAD_ROWS == 0 and w.shape[1] in (16, 32, 64)


def affine_matmul_pallas(x: jax.Array, a: jax.Array, b: jax.Array, w: jax.Array, silu: bool, *,
                         rows: int = HEAD_ROWS, warps: int | None = HEAD_WARPS,
                         interpret: bool = False) -> jax.Array:
    """Grid (image, tile of `rows` positions); fp32 out."""
    n, p, c = x.shape

    def kernel(x_ref, a_ref, b_ref, w_ref, o_ref):
        y = silu_affine(x_ref[...], a_ref[...], b_ref[...], silu).astype(w_ref.dtype)
        o_ref[...] = jnp.dot(y, w_ref[...], preferred_element_type=jnp.float32)

    tile = pl.BlockSpec((None, rows, c), lambda i, j: (i, j, 0))
    per_image = pl.BlockSpec((None, c), lambda i, j: (i, 0))
    k = w.shape[1]
    return pl.pallas_call(kernel, out_shape=jax.ShapeDtypeStruct((n, p, k), jnp.float32), grid=(n, p // rows),
                          in_specs=[tile, per_image, per_image, pl.BlockSpec((c, k), lambda i, j: (0, 0))],
                          out_specs=pl.BlockSpec((None, rows, k), lambda i, j: (i, j, 0)),
                          compiler_params=compiler_params(warps), interpret=interpret,
                          name="groupnorm_head")(x, a, b, w)


def affine_matmul_jnp(x: jax.Array, a: jax.Array, b: jax.Array, w: jax.Array, silu: bool) -> jax.Array:
    y = silu_affine(x, a, b, silu).astype(w.dtype)
    return jnp.einsum("npc,ck->npk", y, w, preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def affine_matmul(x: jax.Array, a: jax.Array, b: jax.Array, w: jax.Array, silu: bool,
                  interpret: bool = False) -> jax.Array:
    """[silu](x * a + b) @ w, the product in w's dtype with fp32 sums; x (B, P, C), a, b (B, C) fp32, w (C, K)."""
    if interpret or matmul_ok(x, w):
        return batch_partitioned(affine_matmul_pallas, "b p c, b c, b c, c k -> b p k", silu=silu,
                                 interpret=interpret)(x, a, b, w)
    return affine_matmul_jnp(x, a, b, w, silu)


def _matmul_bwd(silu, interpret, res, g):
    x, a, b, w = res
    y = silu_affine(x, a, b, silu).astype(w.dtype).astype(jnp.float32)
    dw = jnp.einsum("npc,npk->ck", y, g)
    dx, da, db = affine_grads(x, a, b, jnp.einsum("npk,ck->npc", g, w.astype(jnp.float32)), silu)
    return dx.astype(x.dtype), da, db, dw.astype(w.dtype)


affine_matmul.defvjp(saving_inputs(affine_matmul, 4), _matmul_bwd)
