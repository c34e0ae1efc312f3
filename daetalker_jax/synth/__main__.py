"""`python -m daetalker_jax.synth`: build the synthetic talking-face corpus and its preview."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from daetalker_jax.errors import HelpFormatter, UserError, ensure_writable_dir, run_cli
from daetalker_jax.synth import corpus, recordings, speech
from daetalker_jax.synth.preview import contact_sheet
from daetalker_jax.synth.sentences import HARVARD


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m daetalker_jax.synth",
        description="Synthesize a single-speaker talking-face corpus (mp4 + speech) with per-frame ground "
                    "truth: espeak-ng speech, an acoustic mouth track, head motion and a 3-D face renderer. "
                    "Rerun the same command to resume an interrupted run.",
        formatter_class=HelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/synth"), help="output folder")
    p.add_argument("--minutes", type=float, default=2.0, help="minutes of TTS speech to synthesize")
    p.add_argument("--size", type=int, default=128, help="frame size in pixels (square, 64..512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clip plan and motion")
    p.add_argument("--identities", type=int, default=1, help="number of people (DAE-Talker is person-specific)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="parallel clip renderers")
    p.add_argument("--voices", default=",".join(speech.TRAIN_VOICES), help="comma-separated espeak-ng training voices")
    p.add_argument("--held-out-voices", default=",".join(speech.HELD_OUT_VOICES),
                   help="comma-separated voices used only in the test split")
    p.add_argument("--sentences", type=Path, help="text file, one sentence per line (default: Harvard sentences)")
    p.add_argument("--speech", type=Path, nargs="*", default=[],
                   help="speech files (wav/flac/mp3/m4a, any rate) that each drive one extra test clip")
    p.add_argument("--speech-dir", type=Path, default=None,
                   help="real recordings, one subfolder per speaker (`python -m daetalker_jax.synth.recordings "
                        "--out DIR` fetches ~2 h in 5 voices): a share of the minutes is spoken by them")
    p.add_argument("--held-out-speakers", default=None,
                   help="comma-separated speakers of --speech-dir used only for testing (default: the folder's "
                        "recordings.json suggestion, fr_CA_f_June for the fetched prompts)")
    p.add_argument("--real-share", type=float, default=0.5,
                   help="with --speech-dir: the share of --minutes spoken by its training speakers")
    p.add_argument("--no-preview", action="store_true", help="skip the contact sheet")
    return p.parse_args(argv)


def _sentences(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return HARVARD
    if not path.is_file():
        raise UserError(f"sentence file {path} does not exist")
    return tuple(line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not 64 <= args.size <= 512:
        raise UserError(f"--size must be within 64..512, got {args.size}")
    if args.minutes <= 0 or args.identities < 1 or args.workers < 1:
        raise UserError("--minutes must be > 0, --identities and --workers >= 1")
    if not 0 <= args.real_share <= 1:
        raise UserError(f"--real-share must be within 0..1, got {args.real_share}")
    held_out_speakers: tuple[str, ...] = ()
    if args.speech_dir is not None:
        recordings.list_speakers(args.speech_dir)   # a clear error for a wrong folder, before anything else
        held_out_speakers = recordings.default_held_out(args.speech_dir) if args.held_out_speakers is None else \
            tuple(s for s in args.held_out_speakers.split(",") if s)
    elif args.held_out_speakers is not None:
        raise UserError("--held-out-speakers needs --speech-dir")
    settings = corpus.CorpusSettings(
        minutes=args.minutes, size=args.size, seed=args.seed, identities=args.identities,
        voices=tuple(v for v in args.voices.split(",") if v),
        held_out_voices=tuple(v for v in args.held_out_voices.split(",") if v),
        sentences=_sentences(args.sentences), speech_files=tuple(str(p) for p in args.speech),
        speech_dir=None if args.speech_dir is None else str(args.speech_dir.resolve()),
        held_out_speakers=held_out_speakers, real_share=args.real_share)
    out = ensure_writable_dir(args.out)
    start = time.time()
    manifest = corpus.build(settings, out, workers=args.workers)
    sizes = {k: len(v) for k, v in manifest["splits"].items()}
    groups = ", ".join(f"{g} {n}" for g, n in manifest["groups"].items() if n)
    print(f"corpus: {len(manifest['clips'])} clips, {manifest['minutes']:.2f} min at {args.size}px "
          f"(train {sizes['train']}, val {sizes['val']}, test {sizes['test']}; speech: {groups}) "
          f"in {time.time() - start:.0f} s")
    print(f"manifest: {out / 'manifest.json'}")
    if not args.no_preview:
        print(f"preview: {contact_sheet(out, out / 'preview.png')}")
    return 0


if __name__ == "__main__":
    run_cli(main)
