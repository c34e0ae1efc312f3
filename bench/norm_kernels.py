"""GroupNorm's two memory-bound passes at the UNet's largest activations: XLA's fusions against the Pallas
kernels of daetalker_jax/models/norm_kernels.py and unet_kernels.py, over tile sizes (how their ROWS, SPLITS and
WARPS were chosen).

bench/kernel_time.py shows the 128 px DDIM step spending ~42% of its time in GroupNorm statistics and in the
normalise + AdaGN + SiLU pass, at 2.1-2.8 TB/s where the card streams ~4.8 TB/s; the convolutions already run at
~87% of the bf16 peak. This measures, on the level-0 shapes, how much a hand-written kernel could gain:
  stats: per-(image, channel) sum and sum of squares over the positions (a column reduction in NHWC);
  apply: y = silu(x * scale[b, c] + shift[b, c]) in fp32, written in bf16 (GroupNorm + AdaGN folded per channel);
  concat: the decoder's apply on [h, skip] (two inputs of `channels` each; at 256 channels also 256 + 128), writing
  the normalised concatenation and the raw one's 1x1 projection to the skip's width: XLA's fusion or the Pallas
  concat kernel, each + cuDNN's 1x1 convolution, against the projecting Pallas pass (`--concat-rows`, ...);
  upsample: the up-ResBlock's apply on a (size / 2)^2 input, writing it and its normalised value up-sampled 2x;
  head: the UNet's output, silu(x * scale + shift) into a 3x3 conv to 3 channels: XLA's apply + cuDNN's conv against
  one Pallas pass multiplying by the conv's 9 taps (C x 32) + XLA's shifted sum (at the first channel count only).
Channel counts other than 128 and 256 (e.g. 384) take Pallas programs of 128 channels, except the up-sampling pass
and the head, whose programs hold whole rows (their rows report the Triton error there; the model keeps them in XLA).

Run (GPU machine): python bench/norm_kernels.py [--batch 100] [--size 128] [--channels 128 256] [--splits 4 8]
[--warps 4 8] (Triton's default is 4 warps per program) [--head-rows 32 64 128] [--concat-rows 64 128]
[--concat-tiles 1 4 16] [--concat-stages 0 2 3]
On the CPU (`--interpret`) it only checks that the Pallas kernels agree with the jnp reference.
"""

from __future__ import annotations

import argparse
import functools
import itertools

import jax
import jax.numpy as jnp

from bench.timing import seconds_per_call
from daetalker_jax.models.layers import conv_taps, sum_taps
from daetalker_jax.models.norm_kernels import affine_jnp, affine_pallas, moments_jnp, moments_pallas
from daetalker_jax.models.unet_kernels import (affine_matmul_pallas, concat_affine_jnp, concat_affine_pallas,
                                               project_affine_pallas, upsample_affine_jnp, upsample_affine_pallas)


def head_xla(x, scale, shift, kernel, size):
    """The previous UNet output: the apply pass, then cuDNN's 3x3 conv in bf16, fp32 out."""
    y = affine_jnp(x, scale, shift, True).reshape(x.shape[0], size, size, -1)
    out = jax.lax.conv_general_dilated(y, kernel.astype(y.dtype), (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out.astype(jnp.float32)


def concat_conv(h, s, a, b, w, bias, concat=concat_affine_jnp):
    """The decoder's pass as two: `concat` writes the normalised and the raw concatenation (XLA's fusion or the
    Pallas kernel), then cuDNN's 1x1 convolution reads the raw one."""
    y, raw = concat(h, s, a, b, True)
    proj = jax.lax.conv_general_dilated(raw[:, :, None], w[None, None], (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, :, 0]
    return y, proj + bias.astype(proj.dtype)


def head_pallas(x, scale, shift, kernel, size, **opts):
    t = affine_matmul_pallas(x, scale, shift, conv_taps(kernel, jnp.bfloat16), True, **opts)
    return sum_taps(t.reshape(x.shape[0], size, size, -1), kernel.shape[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--channels", type=int, nargs="+", default=[128, 256])
    p.add_argument("--rows", type=int, nargs="+", default=[32, 64, 128], help="Pallas tile rows to try")
    p.add_argument("--splits", type=int, nargs="+", default=[4, 16], help="moments: programs per image to try")
    p.add_argument("--warps", type=int, nargs="+", default=[4, 8], help="warps per program to try")
    p.add_argument("--head-rows", type=int, nargs="+", default=[32, 64, 128], help="head: Pallas tile rows")
    p.add_argument("--concat-rows", type=int, nargs="+", default=[64, 128], help="concat: Pallas tile rows")
    p.add_argument("--concat-tiles", type=int, nargs="+", default=[1, 4, 16], help="concat: tiles per program")
    p.add_argument("--concat-stages", type=int, nargs="+", default=[0], help="concat: Triton stages (0: default)")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--interpret", action="store_true", help="CPU: check the kernels, no timing")
    args = p.parse_args()
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}")
    print("| pass | channels | implementation | ms | GB moved | TB/s | max abs err vs XLA |\n" + "|---" * 7 + "|")
    for c in args.channels:
        key = jax.random.key(c)
        x = jax.random.normal(key, (args.batch, args.size * args.size, c), jnp.bfloat16)
        scale = jax.random.uniform(jax.random.key(1), (args.batch, c), jnp.float32, 0.5, 1.5)
        shift = jax.random.normal(jax.random.key(2), (args.batch, c), jnp.float32)
        skips = [(x[::-1] * 0.5).astype(x.dtype)] + ([x[::-1, :, :128]] if c == 256 else [])
        small = x[:, : x.shape[1] // 4].reshape(args.batch, args.size // 2, args.size // 2, c)
        kernel = jax.random.normal(jax.random.key(3), (3, 3, c, 3)) * 0.03
        moved = {"stats": x.nbytes + 2 * scale.nbytes, "apply": 2 * x.nbytes + 2 * scale.nbytes,
                 "upsample": 9 * small.nbytes + 2 * scale.nbytes,
                 "head": x.nbytes + x.nbytes // c * 4 * 3}   # read x, write the fp32 RGB image: the least possible
        xla_apply = jax.jit(functools.partial(affine_jnp, silu=True))
        xla_upsample = jax.jit(functools.partial(upsample_affine_jnp, silu=True))
        xla_head = jax.jit(functools.partial(head_xla, size=args.size))
        ref = {"stats": jax.jit(moments_jnp)(x), "apply": xla_apply(x, scale, shift),
               "upsample": xla_upsample(small, scale, shift),
               "head": xla_head(x, scale, shift, kernel)}
        candidates = [("stats", "XLA", jax.jit(moments_jnp), (x,)), ("apply", "XLA", xla_apply, (x, scale, shift)),
                      ("upsample", "XLA", xla_upsample, (small, scale, shift))]
        for rows in args.rows:
            for warps in args.warps:
                tag = f"Pallas {rows} rows, {warps} warps"
                for splits in args.splits:
                    fn = jax.jit(functools.partial(moments_pallas, splits=splits, rows=rows, warps=warps,
                                                   interpret=args.interpret))
                    candidates.append(("stats", f"{tag}, {splits} splits", fn, (x,)))
                opts = {"silu": True, "rows": rows, "warps": warps, "interpret": args.interpret}
                candidates.append(("apply", tag, jax.jit(functools.partial(affine_pallas, **opts)), (x, scale, shift)))
        for skip in skips:   # projected to the skip's width, as in the UNet decoder
            name = f"concat {c} + {skip.shape[-1]}"
            wide = [jnp.concatenate([v, v[:, ::-1][:, :skip.shape[-1]]], -1) for v in (scale, shift)]
            w = (jax.random.normal(jax.random.key(4), (wide[0].shape[1], skip.shape[-1])) * 0.05).astype(x.dtype)
            concat_args = (x, skip, *wide, w, shift[0, :skip.shape[-1]])
            moved[name] = 2 * (x.nbytes + skip.nbytes) + skip.nbytes + 4 * wide[0].nbytes   # read, write y, write proj
            ref[name] = jax.jit(concat_conv)(*concat_args)
            candidates.append((name, "XLA + cuDNN 1x1 conv", jax.jit(concat_conv), concat_args))
            pallas_concat = functools.partial(concat_affine_pallas, interpret=args.interpret)
            candidates.append((name, "Pallas concat + cuDNN 1x1 conv",
                               jax.jit(functools.partial(concat_conv, concat=pallas_concat)), concat_args))
            for rows, tiles, stages, warps in itertools.product(args.concat_rows, args.concat_tiles,
                                                                args.concat_stages, args.warps):
                fn = jax.jit(functools.partial(project_affine_pallas, silu=True, rows=rows, tiles=tiles, warps=warps,
                                               stages=stages or None, interpret=args.interpret))
                candidates.append((name, f"Pallas {rows} rows x {tiles}, {warps} warps, {stages} stages", fn,
                                   concat_args))
        for warps in args.warps:   # one row of the image per program
            fn = jax.jit(functools.partial(upsample_affine_pallas, silu=True, warps=warps, interpret=args.interpret))
            candidates.append(("upsample", f"Pallas, {warps} warps", fn, (small, scale, shift)))
        if c == args.channels[0]:
            candidates.append(("head", "XLA apply + cuDNN conv", xla_head, (x, scale, shift, kernel)))
            for rows in args.head_rows:
                for warps in args.warps:
                    fn = jax.jit(functools.partial(head_pallas, size=args.size, rows=rows, warps=warps,
                                                   interpret=args.interpret))
                    candidates.append(("head", f"Pallas {rows} rows, {warps} warps + sum", fn,
                                       (x, scale, shift, kernel)))
        for name, impl, fn, fn_args in candidates:
            try:
                out = fn(*fn_args)
            except Exception as e:   # noqa: BLE001 -- a tile shape the backend rejects: report, go on
                print(f"| {name} | {c} | {impl} | failed: {type(e).__name__}: {str(e)[:100]} | | | |")
                continue
            err = max(float(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)).max())
                      for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref[name])))
            sec = float("nan") if args.interpret else seconds_per_call(fn, *fn_args, iters=args.iters)
            print(f"| {name} | {c} | {impl} | {sec * 1e3:.3f} | {moved[name] / 1e9:.2f} | "
                  f"{moved[name] / sec / 1e12:.2f} | {err:.2e} |", flush=True)


if __name__ == "__main__":
    main()
