"""Frames per second the Grain frame stream delivers (JPEG decode + batch + transfer to the devices).

Run: python bench/input_pipeline.py [--sizes 128 256] [--frames 3000] [--workers 0 2 4 8]
It first writes a prepared dataset of rendered synthetic frames to --data (reused when present), then
times `frame_dataset` -> `to_global` for each worker count and prints a table against the rates one
H100 training step needs (the anchors' targets: >= 550 img/s at 128, >= 160 img/s at 256).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from pathlib import Path

import numpy as np
from PIL import Image

TARGET = {128: 550, 256: 160}


def build(data: Path, size: int, n_frames: int, unique: int = 120) -> Path:
    """A one-clip-per-250-frames dataset of rendered faces (`unique` distinct frames, reused)."""
    from daetalker_jax.data import clip_cache
    from daetalker_jax.data.tfds_builder import write_dataset
    from daetalker_jax.synth.identity import Identity
    from daetalker_jax.synth.render import FrameState, Renderer

    out = data / f"s{size}_n{n_frames}"
    if (out / "daetalker_data" / "frames").exists():
        return out
    renderer, rng = Renderer(Identity.from_seed(0), size), np.random.default_rng(0)
    jpegs = []
    for _ in range(unique):
        frame = renderer.render(FrameState(yaw=rng.uniform(-15, 15), pitch=rng.uniform(-8, 8), opening=rng.uniform()))
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
        jpegs.append(buf.getvalue())
    cache, ids = out / "cache", []
    cache.mkdir(parents=True, exist_ok=True)
    for c in range(n_frames // 250):
        clip_id = f"clip{c:04d}"
        clip_cache.save_clip(cache, clip_id, [jpegs[(c * 250 + k) % unique] for k in range(250)],
                             np.zeros(250 * 640, np.int16), np.zeros((1000, 80), np.float32),
                             np.zeros((250, 3), np.float32), {"index": c})
        ids.append(clip_id)
    write_dataset(out, cache, {"train": ids}, size)
    return out


def measure(data_dir: Path, workers: int, batch: int, seconds: float) -> float:
    import jax

    from daetalker_jax.data import pipeline

    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    it = iter(pipeline.frame_dataset(str(data_dir), "train", batch, seed=0, workers=workers, prefetch=16))
    for _ in range(3):   # warm-up: worker start, first reads
        jax.block_until_ready(pipeline.to_global(next(it), mesh)["image"])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        jax.block_until_ready(pipeline.to_global(next(it), mesh)["image"])
        n += batch
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--frames", type=int, default=3000)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--data", type=Path, default=Path("runs/bench_pipeline"))
    args = p.parse_args()
    from absl import flags
    flags.FLAGS.mark_as_parsed()   # grain's worker processes read absl flags
    import jax

    device = jax.devices()[0].device_kind
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, devices: {device} x {jax.device_count()}")
    print("| size | workers | frames/s | target (1 H100 step) | ratio |\n|---|---|---|---|---|")
    for size in args.sizes:
        data_dir = build(args.data, size, args.frames)
        for w in args.workers:
            rate = measure(data_dir, w, args.batch, args.seconds)
            print(f"| {size} | {w} | {rate:.0f} | {TARGET.get(size, '-')} | {rate / TARGET.get(size, rate):.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
