"""Streaming latency: a live source delivers 16 kHz audio in 40 ms chunks at real-time pace; `Talker.stream`
(0.48 s windows, 0.52 s look-ahead) turns it into frames. For frame i, whose audio ends at (i + 1) / 25 s
after the stream started, latency = the wall time it was emitted - that instant. Reported: the first
frame's latency, the median and 95th percentile over all frames, the last frame's (no growth = keeps up
with real time) and the throughput when the same audio is fed as fast as possible. The algorithmic floor is
look-ahead + up to one window (0.52 to 1.0 s); the rest is compute. Random weights at the real sizes.

Run (GPU machine): python bench/stream.py [--sizes 128 256] [--steps 20] [--seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import random_models, synthetic_speech  # noqa: E402

from daetalker_jax.talker import Talker  # noqa: E402

CHUNK = 640   # 40 ms of audio per delivery


def live(audio: np.ndarray, start: float) -> Iterator[np.ndarray]:
    """Yields each chunk no earlier than the moment its last sample would have been spoken."""
    for i in range(0, len(audio), CHUNK):
        time.sleep(max(0.0, start + (i + CHUNK) / 16000 - time.perf_counter()))
        yield audio[i:i + CHUNK]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--steps", type=int, nargs="+", default=[20])
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    audio = synthetic_speech(args.seconds)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}; {args.seconds:.0f} s of live speech")
    print("| size | DDIM steps | first frame latency s | median s | p95 s | last frame s | throughput frames/s |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        models = random_models(size)
        for steps in args.steps:
            talker = Talker(*models, steps=steps, batch_frames=16)
            list(talker.stream([audio[:16000 * 6]]))                       # warm-up: compiles every shape
            start = time.perf_counter()
            emitted = [time.perf_counter() - start for _ in talker.stream(live(audio, start))]
            latency = np.array(emitted) - (np.arange(len(emitted)) + 1) / 25
            t0 = time.perf_counter()
            n = sum(1 for _ in talker.stream(audio[i:i + CHUNK] for i in range(0, len(audio), CHUNK)))
            fps = n / (time.perf_counter() - t0)
            print(f"| {size} | {steps} | {latency[0]:.3f} | {np.median(latency):.3f} | "
                  f"{np.percentile(latency, 95):.3f} | {latency[-1]:.3f} | {fps:.1f} |", flush=True)


if __name__ == "__main__":
    main()
