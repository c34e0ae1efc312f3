"""`python -m daetalker_jax.prepare`: talking-head videos -> TFDS/ArrayRecord dataset for training."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from daetalker_jax.data.prepare import PrepareConfig, prepare
from daetalker_jax.errors import HelpFormatter, UserError, ensure_writable_dir, run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m daetalker_jax.prepare",
        description="Prepare one speaker's videos for training: 25 fps frames cropped around the face, 16 kHz "
                    "audio, 80-bin log-mel, head pose; written as a TFDS dataset (array_record) under --out. "
                    "Resumable: rerun the same command to continue.",
        formatter_class=HelpFormatter)
    p.add_argument("--videos", type=Path, required=True,
                   help="a folder of videos, the synthetic corpus' manifest.json, or a text file of "
                        "`path[,split]` lines")
    p.add_argument("--out", type=Path, required=True, help="dataset folder (DATA_DIR)")
    p.add_argument("--size", type=int, default=128, help="frame size after cropping (square)")
    p.add_argument("--crop", default="face", help="face (square around the detected face), full, or x,y,w,h")
    p.add_argument("--margin", type=float, default=2.2, help="crop side in face heights (head and shoulders)")
    p.add_argument("--min-seconds", type=float, default=2.0, help="skip clips shorter than this")
    p.add_argument("--allow-vfr", action="store_true", help="resample variable-frame-rate videos instead of skipping")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="clips prepared in parallel")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 32 <= args.size <= 1024:
        raise UserError(f"--size must be within 32..1024, got {args.size}")
    if args.crop not in ("face", "full") and not re.fullmatch(r"\d+(\.\d+)?(,\d+(\.\d+)?){3}", args.crop):
        raise UserError(f"--crop must be face, full or x,y,w,h in pixels, got {args.crop!r}")
    cfg = PrepareConfig(size=args.size, crop=args.crop, margin=args.margin, min_seconds=args.min_seconds,
                        allow_vfr=args.allow_vfr)
    out = ensure_writable_dir(args.out)
    summary = prepare(args.videos, out, cfg, workers=args.workers)
    print(f"prepared {summary['clips']} clips, {summary['frames']} frames ({summary['hours']:.3f} h) at "
          f"{args.size}px into {out} (splits {summary['splits']}) in {summary['seconds']} s")
    for row in summary["skipped"]:
        print(f"  skipped {row['file']}: {row['reason']}")
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
