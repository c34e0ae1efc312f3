"""`python -m daetalker_jax.evaluate --dae RUN --s2l RUN --data DATA --out REPORT_DIR`: the evaluation suite.

Generates every held-out clip of DATA from its speech and writes REPORT_DIR/report.json (every number, per
clip and averaged), summary.md (the quality targets and where the run stands), mouth.png, pose.png,
targets.png, sample.mp4 (the first clip, with its speech) and sheet.png (its contact sheet). With
--corpus (the synthetic corpus' clips folder, with the JSON sidecars) lip sync is scored against the
analytic mouth track; with --sync (a trained sync expert run) LSE-D / LSE-C / offset are added, for the
generated and for the real frames."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from daetalker_jax.errors import HelpFormatter, UserError, ensure_writable_dir, require_run, run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m daetalker_jax.evaluate", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--dae", type=Path, required=True, help="the DiffAE training run folder")
    p.add_argument("--s2l", type=Path, required=True, help="the speech2latent training run folder")
    p.add_argument("--data", type=Path, required=True, help="the prepared dataset (held-out clips are scored)")
    p.add_argument("--corpus", type=Path, default=None,
                   help="the synthetic corpus' clips folder (sidecars): lip sync against the analytic mouth track")
    p.add_argument("--sync", type=Path, default=None,
                   help="a trained sync expert run (python -m daetalker_jax.train --config configs/sync.py): LSE-D/C")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--split", default=None, help="split to score (default: test, else val)")
    p.add_argument("--pose", choices=("given", "predicted"), default="given",
                   help="feed the ground-truth pose to speech2latent, or let it predict one")
    p.add_argument("--steps", type=int, default=20, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the shared x_T")
    p.add_argument("--max-clips", type=int, default=None, help="score only the first N clips")
    p.add_argument("--no-fvd", action="store_true", help="skip FVD (the I3D network is slow on a CPU)")
    p.add_argument("--recon-frames", type=int, default=8,
                   help="real frames per clip (evenly spaced) for the DiffAE-alone reconstruction scores")
    p.add_argument("--invert-steps", type=int, default=None,
                   help="DDIM steps of the inverted-x_T reconstruction, inverting and decoding (DiffAE's "
                   "autoencoding protocol; default: the DiffAE config's invert_steps, 100 in the paper configs)")
    p.add_argument("--batch-frames", type=int, default=128, help="frames per DDIM batch (all clips together)")
    p.add_argument("--workers", type=int, default=None,
                   help="processes for the CPU work on pixels: mouth/pose reader, PSNR/SSIM, stability "
                   "(default: the cores)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from daetalker_jax.xla_cache import enable_compilation_cache

    enable_compilation_cache()
    for flag, path in (("--dae", args.dae), ("--s2l", args.s2l), ("--sync", args.sync)):
        if path is not None:
            require_run(flag, path)
    if not (args.data / "summary.json").is_file():
        raise UserError(f"--data {args.data} is not a prepared dataset folder (no summary.json); pass the --out of "
                        "`python -m daetalker_jax.prepare`")
    if args.corpus is not None and not args.corpus.is_dir():
        raise UserError(f"--corpus {args.corpus} is not a folder; pass the corpus' clips folder (CORPUS/clips)")
    for flag, value in (("--recon-frames", args.recon_frames), ("--batch-frames", args.batch_frames),
                        ("--workers", args.workers)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
    from daetalker_jax.diffusion.schedule import check_steps, run_timesteps

    for flag, value in (("--steps", args.steps), ("--invert-steps", args.invert_steps)):
        if value is not None:
            check_steps(value, run_timesteps(args.dae), flag)
    out = ensure_writable_dir(args.out)


    from daetalker_jax.evaluation.pixels import worker_pool
    from daetalker_jax.evaluation.report import write_report
    from daetalker_jax.evaluation.suite import (Reader, SyncExpert, aggregate, evaluate_clips, held_out_split,
                                                video_fvd)
    from daetalker_jax.media import write_mp4
    from daetalker_jax.data.pipeline import clip_audio, data_source
    from daetalker_jax.talker import Talker

    split = args.split or held_out_split(args.data)
    t0 = time.perf_counter()
    with worker_pool(args.workers or os.cpu_count()) as pool:   # they start while the models load
        talker = Talker(args.dae, args.s2l, steps=args.steps, batch_frames=args.batch_frames)
        reader = Reader(talker.image_size, args.data, args.corpus)
        seconds = {"load": round(time.perf_counter() - t0, 2)}
        invert_steps = int(talker.dae_config.get("invert_steps", args.steps)) if args.invert_steps is None \
            else args.invert_steps
        results = evaluate_clips(talker, args.data, args.corpus, split=split, pose_given=args.pose == "given",
                                 seed=args.seed, max_clips=args.max_clips, recon_frames=args.recon_frames,
                                 invert_steps=invert_steps, reader=reader, pool=pool, seconds=seconds,
                                 sync=None if args.sync is None else SyncExpert(args.sync))
    if not results:
        raise UserError(f"the {split} split of {args.data} has no clips")
    summary = aggregate(results)
    if not args.no_fvd:
        t0 = time.perf_counter()
        summary["fvd"] = video_fvd(results)
        seconds["fvd"] = round(time.perf_counter() - t0, 2)
    meta = {"dae": str(args.dae), "s2l": str(args.s2l), "data": str(args.data), "split": split,
            "steps": args.steps, "invert_steps": invert_steps, "seed": args.seed, "pose_given": args.pose == "given",
            "clips": len(results), "seconds": seconds}
    t0 = time.perf_counter()
    write_report(out, results, summary, meta)
    first = results[0]
    audio = clip_audio(data_source(str(args.data), "clips", split)[0])
    write_mp4(out / "sample.mp4", first.generated, audio[:len(first.generated) * 640])
    if args.corpus is not None and (args.corpus / f"{first.clip_id}.json").is_file():
        from daetalker_jax.generation.sheet import contact_sheet

        contact_sheet(out / "sample.mp4", args.corpus / f"{first.clip_id}.mp4", args.data, out / "sheet.png",
                      generated=first.generated, real=first.real, reader=lambda frames: reader(frames)[0])
    print(json.dumps({k: round(v, 4) for k, v in summary.items()}, indent=1))
    seconds["report"] = round(time.perf_counter() - t0, 2)   # plots, mp4, contact sheet (not in report.json)
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))
    print(f"report: {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
