"""`python -m daetalker_jax.generate --audio speech.wav --dae RUN --s2l RUN --out out.mp4`: a talking video."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from daetalker_jax.errors import HelpFormatter, UserError, ensure_writable_dir, require_run, run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m daetalker_jax.generate",
        description="Drive a trained talking head with speech: speech2latent predicts one latent per 25 fps frame, "
                    "the DiffAE decodes every frame from one shared x_T with DDIM, and the speech is muxed in.",
        formatter_class=HelpFormatter)
    p.add_argument("--audio", type=Path, required=True, help="speech: wav, flac, mp3, m4a, ... any rate, any channels")
    p.add_argument("--dae", type=Path, required=True, help="the DiffAE training run (its --workdir)")
    p.add_argument("--s2l", type=Path, required=True, help="the speech2latent training run (its --workdir)")
    p.add_argument("--out", type=Path, required=True, help="output .mp4")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps per frame")
    p.add_argument("--seed", type=int, default=0, help="seed of the shared x_T")
    p.add_argument("--pose", default="predicted",
                   help="predicted | yaw=..,pitch=..,roll=.. (degrees) | file:pose.csv (yaw,pitch,roll per frame) | "
                        "video:ref.mp4 (that video's head motion)")
    p.add_argument("--ref-frame", type=Path, help="image whose DDIM inversion is the shared x_T (exact background)")
    p.add_argument("--batch-frames", type=int, default=64, help="frames decoded at once (over all devices)")
    p.add_argument("--video-size", type=int, default=None,
                   help="side of the written video in pixels, frames resized (bicubic) (default: the DiffAE's size). "
                        "Below ~128 px H.264's 4:2:0 colour subsampling blurs the lips away: write small models "
                        "at 128 or more")
    p.add_argument("--stream", action="store_true",
                   help="streaming mode: feed the audio in 0.2 s chunks, emit frames as they are decoded, and report "
                        "first-frame latency and throughput")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from daetalker_jax.xla_cache import enable_compilation_cache

    enable_compilation_cache()
    if args.out.suffix.lower() != ".mp4":
        raise UserError(f"--out must end in .mp4, got {args.out}")
    if args.batch_frames < 1:
        raise UserError(f"--batch-frames must be positive, got {args.batch_frames}")
    if args.video_size is not None and not 16 <= args.video_size <= 4096:
        raise UserError(f"--video-size must be within 16..4096 pixels, got {args.video_size}")
    from daetalker_jax.diffusion.schedule import check_steps, run_timesteps
    from daetalker_jax.generation.pose import parse_pose
    from daetalker_jax.media import load_audio

    audio = load_audio(args.audio)          # input errors first, before loading checkpoints
    pose = parse_pose(args.pose)
    require_run("--dae", args.dae)
    require_run("--s2l", args.s2l)
    check_steps(args.steps, run_timesteps(args.dae))
    if args.ref_frame is not None and not args.ref_frame.is_file():
        raise UserError(f"--ref-frame {args.ref_frame} does not exist; give a PNG or JPEG image")
    ensure_writable_dir(args.out.parent if str(args.out.parent) else ".")   # streaming or not
    from daetalker_jax.talker import Talker, check_speech

    check_speech(audio, str(args.audio))
    talker = Talker(args.dae, args.s2l, steps=args.steps, batch_frames=args.batch_frames)
    if args.stream:
        return _stream(talker, audio, pose, args)
    summary = talker.generate(audio, args.out, pose=pose, seed=args.seed, ref_frame=args.ref_frame,
                              video_size=args.video_size)
    print(f"wrote {summary['out']}: {summary['frames']} frames ({summary['video_seconds']:.2f} s video for "
          f"{summary['audio_seconds']:.2f} s of speech) in {summary['compute_seconds']:.1f} s "
          f"({summary['compute_seconds'] / summary['video_seconds']:.2f} s per second of video)")
    return 0


def _stream(talker, audio: np.ndarray, pose, args: argparse.Namespace) -> int:
    """Feeds the file as a live source would (0.2 s chunks, as fast as frames are consumed)."""
    from daetalker_jax.media import SAMPLE_RATE, resized, write_mp4

    step = SAMPLE_RATE // 5
    t0 = time.perf_counter()
    stamps: list[float] = []

    def frames():
        for frame in talker.stream((audio[i:i + step] for i in range(0, len(audio), step)), pose=pose,
                                   seed=args.seed, ref_frame=args.ref_frame):
            stamps.append(time.perf_counter() - t0)
            yield frame

    n = write_mp4(args.out, resized(frames(), args.video_size), audio)
    steady = (stamps[-1] - stamps[len(stamps) // 2]) / max(1, n - 1 - len(stamps) // 2)
    print(f"wrote {args.out}: {n} frames streamed; first frame after {stamps[0]:.2f} s, steady state "
          f"{1 / max(steady, 1e-9):.1f} frames/s ({steady * 25:.2f} s per second of video)")
    return 0


if __name__ == "__main__":
    run_cli(main)
