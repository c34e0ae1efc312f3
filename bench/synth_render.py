"""Seconds to synthesize, render and encode one minute of 256x256 talking-face video on ONE core.

Run: python bench/synth_render.py [--size 256] [--seconds 60]
Prints a table: TTS, ground truth (mouth track + motion), rendering, H.264/AAC encoding, total, and the
real-time factor. The process is pinned to one CPU core and numeric libraries to one thread.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from daetalker_jax.media import FPS, SAMPLE_RATE, write_mp4  # noqa: E402
from daetalker_jax.synth import corpus, speech  # noqa: E402
from daetalker_jax.synth.identity import Identity  # noqa: E402
from daetalker_jax.synth.render import Renderer  # noqa: E402
from daetalker_jax.synth.sentences import HARVARD  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    t0 = time.perf_counter()
    clips, total = [], 0
    for i, text in enumerate(HARVARD):
        audio = speech.synthesize(text, speech.TRAIN_VOICES[i % len(speech.TRAIN_VOICES)], 155, 50)
        clips.append(audio)
        total += len(audio)
        if total >= args.seconds * SAMPLE_RATE:
            break
    t_tts = time.perf_counter() - t0

    t0 = time.perf_counter()
    truths = [corpus.ground_truth(a, seed=i) for i, a in enumerate(clips)]
    t_gt = time.perf_counter() - t0

    renderer = Renderer(Identity.from_seed(0), args.size)
    frames_per_clip = []
    t0 = time.perf_counter()
    for gt in truths:
        frames_per_clip.append(np.stack([renderer.render(s) for s in corpus.frame_states(gt)]))
    t_render = time.perf_counter() - t0

    n_frames = sum(len(f) for f in frames_per_clip)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for i, (frames, audio) in enumerate(zip(frames_per_clip, clips)):
            write_mp4(Path(tmp) / f"{i}.mp4", frames, audio)
        t_encode = time.perf_counter() - t0

    video_s = n_frames / FPS
    total_s = t_tts + t_gt + t_render + t_encode
    print(f"machine: {platform.processor() or platform.machine()}, 1 core pinned, python {platform.python_version()}")
    print(f"{n_frames} frames = {video_s:.1f} s of {args.size}x{args.size} video in {len(clips)} clips\n")
    print("| stage | seconds | ms/frame |\n|---|---|---|")
    for name, sec in (("espeak-ng TTS", t_tts), ("ground truth", t_gt), ("render", t_render),
                      ("encode H.264+AAC", t_encode), ("total", total_s)):
        print(f"| {name} | {sec:.2f} | {1000 * sec / n_frames:.2f} |")
    print(f"\nper minute of video: {60 * total_s / video_s:.1f} s on one core "
          f"({video_s / total_s:.2f}x real time)")


if __name__ == "__main__":
    main()
