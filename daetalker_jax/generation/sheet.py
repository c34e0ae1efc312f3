"""`python -m daetalker_jax.generation.sheet --video out.mp4 --clip CORPUS/clips/ID.mp4 --out sheet.png`:
a contact sheet for a video generated from a synthetic-corpus clip's speech: generated frames over the
real frames of that clip (every 3rd frame of its loudest second), and the mouth opening read from every
generated and real frame by `synth.measure` under the clip's analytic ground-truth opening."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from daetalker_jax.errors import UserError, atomic_path, run_cli
from daetalker_jax.media import read_mp4

SHOWN = 10


def _opening(frames: np.ndarray) -> np.ndarray:
    from daetalker_jax.synth.measure import measure

    return np.array([measure(f).opening for f in frames], np.float64)


def contact_sheet(video: Path, clip: Path, out_png: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    generated, real = read_mp4(video).frames, read_mp4(clip).frames
    side = json.loads(clip.with_suffix(".json").read_text())
    truth = np.asarray(side["frames"]["opening"], np.float64)
    n = min(len(generated), len(real), len(truth))
    if n < SHOWN:
        raise UserError(f"{video} has {len(generated)} frames; a contact sheet needs at least {SHOWN}")
    gen_open, real_open = _opening(generated[:n]), _opening(real[:n])
    start = int(np.clip(np.argmax(np.convolve(truth[:n], np.ones(25), "same")) - 15, 0, n - 3 * SHOWN))
    picks = [min(n - 1, start + 3 * k) for k in range(SHOWN)]
    fig = plt.figure(figsize=(SHOWN * 1.2, 5.2))
    for row, (frames, name) in enumerate(((generated, "generated"), (real, "real"))):
        for k, i in enumerate(picks):
            ax = fig.add_subplot(3, SHOWN, row * SHOWN + k + 1)
            ax.imshow(frames[i])
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(name)
    ax = fig.add_subplot(3, 1, 3)
    t = np.arange(n) / 25
    ax.plot(t, truth[:n], "k", label="ground truth")
    ax.plot(t, real_open, color="tab:gray", alpha=0.7, label="measured, real")
    ax.plot(t, gen_open, color="tab:red", label="measured, generated")
    ax.set_xlabel("seconds")
    ax.set_ylabel("mouth opening")
    ax.legend(loc="upper right", fontsize=7)
    ok = np.isfinite(gen_open) & np.isfinite(truth[:n])
    r = float(np.corrcoef(gen_open[ok], truth[:n][ok])[0, 1]) if ok.sum() > 2 else float("nan")
    ax.set_title(f"mouth opening: generated vs ground truth r = {r:.2f}", fontsize=9)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return {"frames": n, "opening_r": r}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daetalker_jax.generation.sheet", description=__doc__)
    p.add_argument("--video", type=Path, required=True, help="the generated mp4")
    p.add_argument("--clip", type=Path, required=True, help="the corpus clip (mp4 with its .json sidecar) it spoke")
    p.add_argument("--out", type=Path, required=True, help="output PNG")
    args = p.parse_args(argv)
    for path in (args.video, args.clip, args.clip.with_suffix(".json")):
        if not path.is_file():
            raise UserError(f"{path} does not exist")
    summary = contact_sheet(args.video, args.clip, args.out)
    print(f"contact sheet {args.out}: mouth opening of the generated video vs ground truth r = "
          f"{summary['opening_r']:.2f} over {summary['frames']} frames")
    return 0


if __name__ == "__main__":
    run_cli(main)
