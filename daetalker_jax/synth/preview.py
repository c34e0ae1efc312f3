"""Contact sheet of a corpus: frames of a few clips with their mouth track and pose plotted under them."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from daetalker_jax.errors import atomic_path  # noqa: E402
from daetalker_jax.media import read_mp4  # noqa: E402
from daetalker_jax.synth.measure import measure  # noqa: E402

N_SHOWN = 10


def _face_crop(frame: np.ndarray, box: np.ndarray, zoom: float = 1.25) -> np.ndarray:
    """Square crop around the face box, zoom x its height, padded with edge pixels at the borders."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = int(round(zoom * (box[3] - box[1]) / 2))
    padded = np.pad(frame, ((half, half), (half, half), (0, 0)), mode="edge")
    x0, y0 = int(round(cx)), int(round(cy))
    return padded[y0:y0 + 2 * half, x0:x0 + 2 * half]


def contact_sheet(corpus: Path, out_png: Path, clip_ids: list[str] | None = None) -> Path:
    """Writes a PNG: per clip, N_SHOWN decoded frames (every 3rd frame from the loudest stretch) above
    the ground-truth mouth opening, the mouth opening `measure` reads back from the decoded frames,
    and yaw/pitch/roll."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    if clip_ids is None:   # one training clip and one held-out-voice test clip
        test = [c for c in manifest["clips"] if c["split"] == "test"]
        clip_ids = [manifest["splits"]["train"][0]] + [c["clip_id"] for c in test[:1]]
    fig = plt.figure(figsize=(16, 4.6 * len(clip_ids)), dpi=90)
    grid = fig.add_gridspec(2 * len(clip_ids), N_SHOWN, height_ratios=[1.1, 1.3] * len(clip_ids))
    for row, clip_id in enumerate(clip_ids):
        side = json.loads((corpus / "clips" / f"{clip_id}.json").read_text())
        video = read_mp4(corpus / side["file"])
        gt = {k: np.array(v) for k, v in side["frames"].items()}
        n = len(video.frames)
        span = 3 * N_SHOWN
        start = int(np.clip(np.argmax(np.convolve(gt["opening"], np.ones(span), "valid")), 0, max(0, n - span)))
        shown = [min(n - 1, start + 3 * k) for k in range(N_SHOWN)]
        boxes = np.array(side["face_box"])
        for k, idx in enumerate(shown):
            ax = fig.add_subplot(grid[2 * row, k])
            # The first panel shows the whole frame, the others zoom on the face so the mouth is visible.
            ax.imshow(video.frames[idx] if k == 0 else _face_crop(video.frames[idx], boxes[idx]))
            ax.set_title(f"#{idx}" + (" (full frame)" if k == 0 else ""), fontsize=8)
            ax.axis("off")
        ax = fig.add_subplot(grid[2 * row + 1, :])
        t = np.arange(n) / side["fps"]
        measured = [measure(f).opening for f in video.frames]
        ax.plot(t, gt["opening"], label="mouth opening (ground truth)", color="C3")
        ax.plot(t, measured, label="opening read from the mp4 by measure()", color="k", lw=0.8, ls="--")
        for idx in shown:
            ax.axvline(idx / side["fps"], color="0.8", lw=0.6, zorder=0)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("seconds")
        title = side["text"] or Path(side["speech_file"]).name
        ax.set_title(f"{clip_id} [{side['split']}, voice {side['voice']}]: {title}", fontsize=9)
        pose = ax.twinx()
        for name, color in (("yaw", "C0"), ("pitch", "C2"), ("roll", "C1")):
            pose.plot(t, gt[name], color=color, lw=0.8, alpha=0.7, label=f"{name} (deg)")
        pose.set_ylim(-25, 25)
        lines = ax.get_legend_handles_labels()[0] + pose.get_legend_handles_labels()[0]
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="upper right", ncol=5)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out_png
