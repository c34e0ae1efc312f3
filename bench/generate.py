"""Generation speed: seconds of compute per second of 25 fps video, for DDIM 10/20/50/100 steps at 128 and
256 px, generation only (DDIM decoding with the shared x_T) and including speech2latent (log-mel + the
default 4+4-block Conformer, windowed as `Talker.latents`). Random weights at the real model sizes; the
speech is synthetic (its content does not change the cost). Compile time is excluded (one warm-up call).

Run (GPU machine): python bench/generate.py [--sizes 128 256] [--steps 10 20 50 100] [--seconds 10]
Prints a Markdown table; the official DiffAE code needs 2.9 s/s at 256 px with 20 steps as it ships, eager (the anchors;
its DDIM step under torch.compile would take ~1.1 s/s: bench/RESULTS.md, stop 27).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

from configs import dae, s2l
from daetalker_jax.talker import Talker
from daetalker_jax.trainers.dae import DAETask
from daetalker_jax.trainers.s2l import S2LTask

ANCHOR_S_PER_S = {(256, 20): 2.9}   # official DiffAE as it ships (eager), 25 fps, the anchors


def random_models(size: int):
    """((config, DiffAE), (config, speech2latent)) with random weights at the real sizes, in eval mode."""
    dc = dae.get_config(str(size))
    dae_model = DAETask(dc).build_model(nnx.Rngs(0))
    sc = s2l.get_config()
    sc.latent_dim, sc.image_size = dc.model.z_channels, size
    s2l_model = S2LTask(sc).build_model(nnx.Rngs(1))
    dae_model.eval()
    s2l_model.eval()
    return (dc, dae_model), (sc, s2l_model)


def synthetic_speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 4 * t) > 0)).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--seconds", type=float, default=10.0, help="length of the speech")
    p.add_argument("--batch-frames", type=int, default=128)
    args = p.parse_args()
    audio = synthetic_speech(args.seconds)
    video_s = np.ceil(len(audio) / 640) / 25
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; {video_s:.2f} s of video per run")
    print("| size | DDIM steps | s2l s/s | decode s/s | total s/s | frames/s | anchor (official) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        models = random_models(size)
        for steps in args.steps:
            talker = Talker(*models, steps=steps, batch_frames=args.batch_frames)
            x_T = talker.noise(0)
            z, _ = talker.latents(audio)                                   # warm-up: compiles
            list(talker.frames(z[:args.batch_frames], x_T))
            t0 = time.perf_counter()
            z, _ = talker.latents(audio)
            t1 = time.perf_counter()
            n = sum(1 for _ in talker.frames(z, x_T))
            t2 = time.perf_counter()
            anchor = ANCHOR_S_PER_S.get((size, steps))
            total = (t2 - t0) / video_s
            ratio = f"{anchor:.2f} s/s ({anchor / total:.2f}x)" if anchor else "-"
            print(f"| {size} | {steps} | {(t1 - t0) / video_s:.3f} | {(t2 - t1) / video_s:.3f} | {total:.3f} | "
                  f"{n / (t2 - t0):.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
