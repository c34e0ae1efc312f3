"""Where the DDIM step's (or the training step's) GPU time goes, per kernel class and per kernel.
A jax.profiler trace of a few calls, summed.

Run (GPU machine): python bench/kernel_time.py --size 128 --ddim-batch 100 [--sampler STEPS] [--out DIR]
    or python bench/kernel_time.py --size 128 --train-batch 128
--sampler profiles the whole DDIM sampler (lax.scan over STEPS steps, as generation runs it) instead of one call, and
compares its device time with its wall time (gaps between kernels, host syncs). --train-batch profiles the training
step the Trainer runs (encoder + UNet forward / backward, Adam, clip, EMA; bench/train_step.py, as bench/dae.py
times it) instead.
Prints the device time per class (convolutions, matmuls, fusions, Pallas, copies), the Pallas time per GroupNorm
pass (models/norm_kernels.py and unet_kernels.py name each: groupnorm_moments, _apply, ...), then the kernels
with the most time; for XLA's fused kernels also the bytes they move (operands + results, from the optimized HLO)
and so their bandwidth, and what they compute (result shape and the JAX ops fused in).
With --out, keeps the trace (TensorBoard / xprof) and the optimized HLO, to look the fused kernels up.
"""

from __future__ import annotations

import argparse
import collections
import functools
import glob
import itertools
import math
import os
import re
import tempfile

import jax
import jax.numpy as jnp
from flax import nnx
from jax.profiler import ProfileData

from bench.timing import seconds_per_call
from bench.train_step import TrainStep
from configs import dae
from daetalker_jax.diffusion import ddim
from daetalker_jax.diffusion.schedule import Schedule
from daetalker_jax.flops import count_flops
from daetalker_jax.trainers.base import build, make_mesh, peak_tflops
from daetalker_jax.trainers.dae import DAETask


def kernel_class(kernel: str) -> str:
    """A coarse class from the CUDA kernel's name (XLA fusion names, cuDNN/CUTLASS/cuBLAS naming)."""
    k = kernel.lower()
    if k.startswith("groupnorm_") or re.fullmatch(r"kernel(__\d+)?", k):
        return "Pallas kernels (GroupNorm: models/*_kernels.py)"
    if "reduce" in k:
        return "fusion: reduction (norm statistics)"
    if k.startswith(("loop_", "input_", "wrapped_", "triton_softmax")):
        return "fusion: elementwise"
    if "fprop" in k or "dgrad" in k or "wgrad" in k or "conv" in k:
        return "convolution (cuDNN)"
    if "gemm" in k or "nvjet" in k or "cutlass" in k:
        return "matmul"
    if "memcpy" in k or "memset" in k:
        return "copy / memset"
    return "other"


_DTYPE_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "s32": 4, "u32": 4, "u8": 1, "s8": 1, "pred": 1}


def _shape_bytes(text: str) -> int:
    total = 0
    for dtype, dims in re.findall(r"\b(bf16|f16|f32|s32|u32|u8|s8|pred)\[([\d,]*)\]", text):
        total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
    return total


# An HLO instruction line: name, result shape(s), opcode, operands; and the computation a fusion calls.
_INSTRUCTION = re.compile(r"\s*(?:ROOT )?%(\S+) = (.*?) ([\w-]+)\((.*?)\)(?:, |$)")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


@functools.cache
def _computations(hlo: str) -> dict[str, list[str]]:
    """The HLO's computations (the entry, fused computations, loop bodies): name -> instruction lines. Cached:
    `fusion_bytes` and `fusion_origins` read the same module (~20 MB for the training step)."""
    bodies, current = {}, None
    for line in hlo.splitlines():
        header = re.match(r"(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header and not line.startswith(" "):
            current = bodies.setdefault(header.group(1), [])
        elif current is not None:
            current.append(line)
    return bodies


def _sliced_reads(body: list[str]) -> dict[int, int]:
    """Bytes a fused computation reads of each parameter that it only slices (parameter index -> the slices'
    bytes): the kernel reads those, not the whole operand (e.g. one layer's GroupNorm scale out of the flattened
    parameters, 1.5 GB)."""
    params, users = {}, collections.defaultdict(list)
    for line in body:
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, op, operands = m.groups()
        if op == "parameter":
            params[name] = int(operands)
        for operand in re.findall(r"%([\w.\-]+)", operands):
            users[operand].append((op, _shape_bytes(shape)))
    return {index: sum(b for _, b in users[name]) for name, index in params.items()
            if users[name] and all(op in ("slice", "dynamic-slice") for op, _ in users[name])}


def fusion_bytes(hlo: str) -> dict[str, int]:
    """Bytes the fused kernels read and write per call (operands + results of the entry computation's fusions;
    of an operand a fusion only slices, the slices), keyed by kernel name. Fusions XLA deduplicated share one
    kernel, named after one of them ('.' -> '_'), so a kernel's bytes are those of its whole group."""
    bodies = _computations(hlo)
    entry = re.search(r"^ENTRY %?([\w.\-]+)", hlo, re.MULTILINE).group(1)
    sizes, group_of, group_bytes = {}, {}, collections.Counter()
    for line in bodies[entry]:
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, shape, op, operands = m.groups()
        sizes[name] = _shape_bytes(shape)
        if op == "fusion":
            dedup = re.search(r'deduplicated_name="([^"]+)"', line)
            group_of[name] = dedup.group(1) if dedup else name
            calls = _CALLS.search(line)
            sliced = _sliced_reads(bodies.get(calls.group(1), [])) if calls else {}
            group_bytes[group_of[name]] += sizes[name] + sum(
                sliced.get(i, sizes.get(a, 0)) for i, a in enumerate(re.findall(r"%([\w.\-]+)", operands)))
    return {name.replace(".", "_"): group_bytes[group] for name, group in group_of.items()}


def fusion_origins(hlo: str) -> dict[str, str]:
    """What each fused kernel computes, in JAX's terms: its result shape and the two JAX ops most frequent among its
    fused instructions (op_name metadata less the step's own jit, three innermost parts), e.g. `f32[64,16384,256]
    transpose(jvp())/mul x5, transpose(jvp())/add x4` for a backward fusion; keyed by kernel name as
    `fusion_bytes`. Why: the training step's ~50 ms of XLA fusions have names (input_reduce_fusion_207) that say
    nothing of where in the model they come from."""
    bodies = _computations(hlo)
    origins = {}
    for line in itertools.chain.from_iterable(bodies.values()):   # the entry's fusions and loop bodies' (the scan)
        m, calls = _INSTRUCTION.match(line), _CALLS.search(line)
        if not (m and calls and m.group(3) == "fusion"):
            continue
        name, shape = m.group(1), m.group(2)
        ops = collections.Counter("/".join(op.split("/")[1:][-3:]) for op in
                                  re.findall(r'op_name="([^"]+)"', "\n".join(bodies.get(calls.group(1), []))))
        layouts = re.sub(r"\{[^}]*\}", "", shape)   # bf16[64,16384,128]{2,1,0} -> bf16[64,16384,128]
        origins[name.replace(".", "_")] = layouts + " " + ", ".join(f"{op} x{n}" for op, n in ops.most_common(2))
    return origins


def summarize(trace_dir: str, hlo: str, steps: int, top: int) -> tuple[float | None, list[str]]:
    """GPU ms per step and a table from the trace's GPU planes (kernels on the stream lines), with the bytes of
    the fused kernels from the HLO and so their bandwidth; None and the planes seen if the trace has no GPU."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))[-1]
    by_kernel, seen = collections.Counter(), []
    for plane in ProfileData.from_file(path).planes:
        seen.append(f"{plane.name}: {[line.name for line in plane.lines]}")
        if plane.name.startswith("/device:GPU"):
            for line in plane.lines:
                if line.name.startswith("Stream"):
                    for event in line.events:
                        by_kernel[event.name] += event.duration_ns
    total = sum(by_kernel.values())
    if not total:
        return None, ["no GPU kernels in the trace; its planes and lines:"] + seen
    nbytes = fusion_bytes(hlo)
    by_class, class_bytes = collections.Counter(), collections.Counter()
    passes = collections.Counter()   # the Pallas kernels by pass (norm_kernels names each pallas_call)
    for kernel, ns in by_kernel.items():
        kind = kernel_class(kernel)
        by_class[kind] += ns
        class_bytes[kind] += nbytes.get(kernel, 0)
        if kind.startswith("Pallas"):
            passes[re.sub(r"__\d+$", "", kernel)] += ns

    def rate(b, ns):
        return f"{b / 1e9:.2f} | {b * steps / ns / 1e3:.2f}" if b else "- | -"

    rows = ["| class | ms per step | share | GB per step (fusions) | TB/s |", "|---|---|---|---|---|"]
    rows += [f"| {c} | {ns / steps / 1e6:.2f} | {100 * ns / total:.1f}% | {rate(class_bytes[c], ns)} |"
             for c, ns in by_class.most_common()]
    rows += ["", "| Pallas pass | ms per step | share |", "|---|---|---|"]
    rows += [f"| `{k}` | {ns / steps / 1e6:.2f} | {100 * ns / total:.1f}% |" for k, ns in passes.most_common()]
    origins = fusion_origins(hlo)
    rows += ["", f"| top {top} kernels | class | ms per step | share | GB per step | TB/s | result, JAX ops |",
             "|---" * 7 + "|"]
    rows += [f"| `{k[:80]}` | {kernel_class(k)} | {ns / steps / 1e6:.3f} | {100 * ns / total:.1f}% | "
             f"{rate(nbytes.get(k, 0), ns)} | {origins.get(k, '')[:120]} |" for k, ns in by_kernel.most_common(top)]
    return total / steps / 1e6, rows


def ddim_workload(config, args) -> tuple:
    """One UNet forward (or the whole sampler with --sampler) at --ddim-batch: (call(i), executable, FLOPs per
    denoising step, images per step, denoising steps per call, a description)."""
    model, _ = build(DAETask(config), config)
    model.eval()
    graph, state = nnx.split(model)
    size = config.model.image_size
    x = jax.random.normal(jax.random.key(0), (args.ddim_batch, size, size, 3))
    z = jax.random.normal(jax.random.key(1), (args.ddim_batch, config.model.z_channels))
    t = jnp.full((args.ddim_batch,), 500, jnp.int32)

    @jax.jit
    def denoise(state, x, t, z):
        return nnx.merge(graph, state)(x, t, z)

    @jax.jit
    def sample(state, x, t, z):
        return ddim.sample(nnx.merge(graph, state), x, z, Schedule.of(config), args.sampler)

    compiled = (sample if args.sampler else denoise).lower(state, x, t, z).compile()
    what = f"DDIM sampler over {args.sampler} steps, per step" if args.sampler else "DDIM step"
    return (lambda i: compiled(state, x, t, z), compiled, count_flops(denoise, state, x, t, z), args.ddim_batch,
            max(args.sampler, 1), what)


def train_workload(config, args) -> tuple:
    """The Trainer's training step at --train-batch, the same program bench/dae.py times."""
    task = DAETask(config)
    model, optimizer = build(task, config)
    step = TrainStep(config, task, model, optimizer, args.train_batch, make_mesh())
    return step, step.compiled, step.flops, args.train_batch, 1, "train step"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="128", choices=list(dae.MODELS), help="configs/dae.py variant")
    p.add_argument("--ddim-batch", type=int, default=100)
    p.add_argument("--train-batch", type=int, default=0, help="profile the training step at this batch instead")
    p.add_argument("--steps", type=int, default=5, help="traced calls")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--sampler", type=int, default=0, help="profile the DDIM sampler over this many steps")
    p.add_argument("--out", help="keep the trace and the optimized HLO here")
    args = p.parse_args()
    if args.train_batch and args.sampler:
        p.error("--train-batch and --sampler profile different programs: give one")
    config = dae.get_config(args.size)
    call, compiled, flops, images, per_call, what = (train_workload if args.train_batch else ddim_workload)(config,
                                                                                                          args)
    wall_ms = seconds_per_call(call, 0, iters=args.steps) / per_call * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or tmp
        os.makedirs(out, exist_ok=True)
        hlo = compiled.as_text()
        name = f"train_{args.size}_b{images}" if args.train_batch else f"ddim_{args.size}_b{images}"
        with open(os.path.join(out, f"{name}.hlo.txt"), "w") as f:
            f.write(hlo)
        jax.profiler.start_trace(out)
        for i in range(args.steps):
            y = call(i)
        jax.block_until_ready(y)
        jax.profiler.stop_trace()
        ms, rows = summarize(out, hlo, args.steps * per_call, args.top)
    kind = jax.devices()[0].device_kind
    print(f"{what}, {args.size} ({config.model.image_size} px), batch {images}, {kind}, "
          f"{flops / images / 1e9:.1f} GFLOP/img (matmul+conv); wall time {wall_ms:.2f} ms per step")
    if ms is not None:
        line = f"device time per step: {ms:.2f} ms => {images / ms * 1e3:.0f} img/s"
        peak = peak_tflops()
        print(line + (f", MFU {100 * flops / (ms * 1e-3) / (peak * 1e12):.1f}%" if peak else "") + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
