"""`python -m daetalker_jax.generation.sheet --video out.mp4 --clip CORPUS/clips/ID.mp4 --data DATA --out
sheet.png`: a contact sheet for a video generated from a synthetic-corpus clip's speech: generated frames
over the real face crops of that clip from the prepared dataset DATA (every 3rd frame of its loudest
second), and the mouth opening of both read by `synth.probe.MouthProbe` (fit on DATA's training crops)
under the clip's analytic ground truth. r(real) is the probe's own accuracy on this clip; r(generated)
is how well the generated mouth follows the speech, and its amplitude (std of the generated opening over the
truth's) how far it opens: 1 is the true range, a mouth that regresses to the mean reads well under 1."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from daetalker_jax.errors import UserError, atomic_path, run_cli
from daetalker_jax.media import read_mp4
from daetalker_jax.metrics.lipsync import amplitude, pearson
from daetalker_jax.synth.probe import MouthProbe, clip_frames, opening_track

SHOWN = 10
HELD_OUT = ("test", "val")


def _real_crops(data_dir: Path, clip_id: str, train: dict[str, np.ndarray]) -> np.ndarray:
    """The clip's crops from whichever split holds it (`train` is already loaded for the probe)."""
    if clip_id in train:
        return train[clip_id]
    counts = json.loads((data_dir / "summary.json").read_text())["splits"]
    for split in (s for s in HELD_OUT if counts.get(s)):
        clips = clip_frames(data_dir, split)
        if clip_id in clips:
            return clips[clip_id]
    raise UserError(f"clip {clip_id} is not in the prepared dataset {data_dir}; pass the --data that was "
                    "prepared from its corpus")


def contact_sheet(video: Path, clip: Path, data_dir: Path, out_png: Path, *, generated: np.ndarray | None = None,
                  real: np.ndarray | None = None, reader: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """generated: the video's frames before encoding (default: decoded from `video`; `measure` misses some
    mouths in the compressed ones); real: the clip's crops (default: found in `data_dir`); reader: frames ->
    mouth opening (default: the probe fit on `data_dir`'s training crops; `evaluate` passes the frames and the
    reader it scored with)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = clip_frames(data_dir, "train") if real is None or reader is None else {}
    generated = read_mp4(video).frames if generated is None else generated
    real = _real_crops(data_dir, clip.stem, train) if real is None else real
    truth = opening_track(clip.parent, clip.stem)
    n = min(len(generated), len(real), len(truth))
    if n < 3 * SHOWN:
        raise UserError(f"{video} has {len(generated)} frames; a contact sheet needs at least {3 * SHOWN}")
    reader = MouthProbe.from_clips(train, clip.parent) if reader is None else reader
    gen_open, real_open, truth = reader(generated[:n]), reader(real[:n]), truth[:n]
    start = int(np.clip(np.argmax(np.convolve(truth, np.ones(25), "same")) - 15, 0, n - 3 * SHOWN))
    picks = [start + 3 * k for k in range(SHOWN)]
    fig = plt.figure(figsize=(SHOWN * 1.2, 5.2))
    for row, (frames, name) in enumerate(((generated, "generated"), (real, "real"))):
        for k, i in enumerate(picks):
            ax = fig.add_subplot(3, SHOWN, row * SHOWN + k + 1)
            ax.imshow(frames[i])
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(name)
    r_gen, r_real = pearson(gen_open, truth), pearson(real_open, truth)
    amp_gen, amp_real = amplitude(gen_open, truth), amplitude(real_open, truth)
    ax = fig.add_subplot(3, 1, 3)
    t = np.arange(n) / 25
    ax.plot(t, truth, "k", label="ground truth")
    ax.plot(t, real_open, color="tab:gray", alpha=0.7,
            label=f"read from real crops (r = {r_real:.2f}, amplitude {amp_real:.2f})")
    ax.plot(t, gen_open, color="tab:red", label=f"read from generated (r = {r_gen:.2f}, amplitude {amp_gen:.2f})")
    ax.set_xlabel("seconds")
    ax.set_ylabel("mouth opening")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(f"mouth opening: generated vs ground truth r = {r_gen:.2f}, amplitude (std ratio) = {amp_gen:.2f}",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return {"frames": n, "opening_r": r_gen, "opening_amplitude": amp_gen, "probe_r_real": r_real,
            "probe_amplitude_real": amp_real}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daetalker_jax.generation.sheet", description=__doc__)
    p.add_argument("--video", type=Path, required=True, help="the generated mp4")
    p.add_argument("--clip", type=Path, required=True, help="the corpus clip (mp4 with its .json sidecar) it spoke")
    p.add_argument("--data", type=Path, required=True, help="the prepared dataset made from that corpus")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    args = p.parse_args(argv)
    for path in (args.video, args.clip, args.clip.with_suffix(".json")):
        if not path.is_file():
            raise UserError(f"{path} does not exist")
    if not (args.data / "summary.json").is_file():
        raise UserError(f"{args.data} is not a prepared dataset folder (no summary.json); pass the --out of "
                        "`python -m daetalker_jax.prepare`")
    summary = contact_sheet(args.video, args.clip, args.data, args.out)
    print(f"contact sheet {args.out}: mouth opening of the generated video vs ground truth r = "
          f"{summary['opening_r']:.2f}, amplitude {summary['opening_amplitude']:.2f} (std generated / std truth) "
          f"over {summary['frames']} frames (the probe reads the real crops with r = {summary['probe_r_real']:.2f}, "
          f"amplitude {summary['probe_amplitude_real']:.2f})")
    return 0


if __name__ == "__main__":
    run_cli(main)
