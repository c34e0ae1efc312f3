"""DiffAE throughput: training steps (encoder + UNet forward/backward, Adam, clip, EMA) and DDIM
denoising steps, img/s and MFU, at 128 and 256 px, bf16 compute / fp32 params, random data.

Run (GPU machine): python bench/dae.py [--sizes 128 256] [--train-batch 64 24] [--ddim-batch 50 100]
    [--official /scratch/diffae]
--sizes takes any configs/dae.py variant (e.g. ref: the reference run's smaller 128 px model, no anchor).
--official: a copy of the official PyTorch code; bench/official.py then times it first, in a subprocess on the same
GPU, at our own training and DDIM batches, and the ratios are against those numbers (else against the anchors:
the official code timed on an H100 on 2026-11-24, given in the performance issue, ANCHOR_TRAIN / ANCHOR_DDIM
below). A ratio is only given between equal batches (the official code's per-image speed grows with the batch; the
anchors have training at 32 / 16 and DDIM at 50 only, and their 256 px DDIM figure is not used: see ANCHOR_DDIM);
where the official code runs out of the GPU's memory at our batch the row says OOM (on an 80 GB H100 its
training fits 64 images at 128 px, 24 at 256 px).
MFU = the step's matmul/conv FLOPs (counted from its jaxpr) / time / (801 TFLOP/s x devices), the bf16 matmul ceiling
measured on our H100 (the anchors). Prints a Markdown table with the official code's anchor numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from bench.timing import seconds_per_call
from bench.train_step import TrainStep, compile_counted
from configs import dae
from daetalker_jax.trainers.base import build, make_mesh, peak_tflops
from daetalker_jax.trainers.dae import DAETask

# Official DiffAE on the same H100 model (the anchors, 2026-11-24): img/s
# keyed (size, batch); None (from an official run): out of the GPU's memory at that batch
ANCHOR_TRAIN = {(128, 32): 169.0, (256, 16): 51.0}    # fp16 AMP eager, what the official code runs
# bf16 + torch.compile, one denoising step. The anchor's 256 px figure (247) is left out: it was timed in the process
# that had compiled the 128 px model first, so torch.compile recompiled with dynamic shapes; compiled on its own the
# official 256 px step runs 461 img/s on an H100 (bench/RESULTS.md, stop 27). Time it with --official instead.
ANCHOR_DDIM = {(128, 50): 1470.0}


def official_anchors(code: str, sizes: list[int], train: dict[int, int], ddim_batches: list[int],
                     iters: int) -> tuple[dict, dict]:
    """Times the official code (bench/official.py) in a subprocess, before this process takes the GPU's memory, at
    our batches (its per-image speed depends on the batch): training at `train`'s {size: batch}, DDIM at
    `ddim_batches`; or reads the JSON such a run wrote (to compare several variants against one measurement).
    Returns ({(size, batch): train img/s}, {(size, batch): DDIM img/s}), None where it ran out of memory."""
    with tempfile.TemporaryDirectory() as tmp:
        out = code   # the numbers of an earlier `bench/official.py --json` in this session
        if not code.endswith(".json"):
            out = os.path.join(tmp, "official.json")
            batches = [str(train.get(s, 0)) for s in sizes]   # 0: not timed
            subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "official.py"), "--code", code,
                            "--sizes", *map(str, sizes), "--train-batch", *batches, "--ddim-batch",
                            *map(str, ddim_batches), "--iters", str(iters), "--json", out], check=True)
        with open(out) as f:
            measured = {int(k): v for k, v in json.load(f).items()}
    if not all(isinstance(v.get("ddim"), dict) for v in measured.values()):
        sys.exit(f"{code}: written by an older bench/official.py (one DDIM number, no batches); run the current "
                 "bench/official.py again, or pass --official the folder with the official code")
    return ({(s, v["train_batch"]): v["train"] for s, v in measured.items() if v["train_batch"]},
            {(s, int(b)): ips for s, v in measured.items() for b, ips in v["ddim"].items()})


def bench_size(variant: str, train_batch: int, ddim_batches: list[int], iters: int, peak: float | None,
               anchors: tuple[dict, dict]) -> list[str]:
    config = dae.get_config(variant)
    size = config.model.image_size
    task = DAETask(config)
    mesh = make_mesh()
    sharded = NamedSharding(mesh, PartitionSpec("data"))
    model, optimizer = build(task, config)
    devices = jax.device_count()
    mfu = lambda f, s: f"{100 * f / s / (peak * 1e12 * devices):.1f}%" if peak else "-"  # noqa: E731
    paper = variant == str(size)   # the anchors are the official code at the paper's sizes
    name = f"{size}px" if paper else f"{size}px ({variant})"

    def anchor(table: dict, ips: float, key) -> str:
        if not paper or key not in table:
            return "- | -"
        return "OOM | -" if table[key] is None else f"{table[key]:.0f} | {ips / table[key]:.2f}x"

    rows = []
    if train_batch:
        step = TrainStep(config, task, model, optimizer, train_batch, mesh)   # what the Trainer runs
        t_train = seconds_per_call(step, 1, iters=iters)   # the step index only sets the EMA decay and the RNG
        train_ips = train_batch / t_train
        rows.append(f"| train step {name} | {train_batch} | {train_ips:.0f} | {mfu(step.flops, t_train)} | "
                    f"{anchor(anchors[0], train_ips, (size, train_batch))} | {step.compile_s:.1f} |")
        model = step.model()

    model.eval()
    eval_graph, eval_state = nnx.split(model)

    @jax.jit
    def denoise(state, x, t, z):
        return nnx.merge(eval_graph, state)(x, t, z)

    for ddim_batch in ddim_batches:
        x = jax.device_put(jax.random.normal(jax.random.key(0), (ddim_batch, size, size, 3)), sharded)
        z = jax.device_put(jax.random.normal(jax.random.key(1), (ddim_batch, config.model.z_channels)), sharded)
        t = jax.device_put(jnp.full((ddim_batch,), 500, jnp.int32), sharded)
        step, ddim_flops, c_ddim = compile_counted(denoise, eval_state, x, t, z)
        t_ddim = seconds_per_call(step, eval_state, x, t, z, iters=iters)
        ddim_ips = ddim_batch / t_ddim
        rows.append(f"| DDIM step {name} | {ddim_batch} | {ddim_ips:.0f} | {mfu(ddim_flops, t_ddim)} | "
                    f"{anchor(anchors[1], ddim_ips, (size, ddim_batch))} | {c_ddim:.1f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["128", "256"], choices=list(dae.MODELS),
                   help="configs/dae.py variants")
    p.add_argument("--train-batch", type=int, nargs="+", default=[64, 24], help="per size, global (0: skip)")
    p.add_argument("--ddim-batch", type=int, nargs="+", default=[50], help="one row each")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--official", help="folder with the official code: time it in this run (bench/official.py) at "
                   "the same --train-batch and --ddim-batch values; or the JSON that `bench/official.py --json` "
                   "wrote in this session")
    args = p.parse_args()
    if len(args.train_batch) != len(args.sizes):
        p.error(f"--train-batch needs one value per size ({len(args.sizes)}), got {len(args.train_batch)}")
    anchors, source = (ANCHOR_TRAIN, ANCHOR_DDIM), "the official code's anchors (2026-11-24)"
    if args.official:
        paper = sorted({int(s) for s in args.sizes if s in ("128", "256")})
        train = {int(s): b for s, b in zip(args.sizes, args.train_batch) if b and s in ("128", "256")}
        anchors, source = official_anchors(args.official, paper, train, args.ddim_batch, args.iters), "this run"
    peak = peak_tflops()
    print(f"devices: {jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}")
    print(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')!r}")
    print(f"| measurement | batch | img/s | MFU | official img/s ({source}) | ratio | compile s |\n" + "|---" * 7 + "|")
    for size, batch in zip(args.sizes, args.train_batch):
        for row in bench_size(size, batch, args.ddim_batch, args.iters, peak, anchors):
            print(row, flush=True)


if __name__ == "__main__":
    main()
