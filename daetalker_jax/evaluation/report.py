"""The evaluation report: report.json (every number), summary.md (the targets table), plots people look at
(mouth track overlay, pose curves, metric bars vs targets), one generated mp4 and its contact sheet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from daetalker_jax.errors import atomic_path
from daetalker_jax.evaluation.suite import ClipResult
from daetalker_jax.synth.corpus import GROUPS

# (score, comparison, target, what it means) — the reference run's quality targets. "within" takes (low, high).
TARGETS = [
    ("recon/psnr_inverted", ">=", 40.0, "DiffAE reconstruction PSNR, inverted x_T (dB)"),
    ("recon/psnr_shared_xT", ">=", 28.0, "DiffAE reconstruction PSNR, one shared random x_T (dB)"),
    ("lipsync/r", ">=", 0.9, "mouth opening vs the analytic track, Pearson r"),
    ("lipsync/amplitude", "within", (0.85, 1.15), "mouth movement, std generated / std truth"),
    ("lipsync/best_offset", "abs<=", 1.0, "sync offset maximising r (frames)"),
    ("lipsync/tts_held_out/r", ">=", 0.92, "held-out TTS voice: lip-sync r"),
    ("lipsync/tts_held_out/amplitude", "within", (0.85, 1.15), "held-out TTS voice: mouth amplitude"),
    ("lipsync/tts_held_out/mae", "<=", 0.10, "held-out TTS voice: mouth opening error"),
    ("lipsync/real_held_out/r", ">=", 0.85, "held-out recorded speaker: lip-sync r"),
    ("lipsync/real_held_out/amplitude", ">=", 0.8, "held-out recorded speaker: mouth amplitude"),
    ("pose/yaw_median_abs_deg", "<=", 2.0, "yaw error when the pose is given, median (deg)"),
    ("stability/flicker_ratio", "<=", 1.2, "background flicker, generated / ground truth"),
]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _reached(value: float, op: str, target) -> float:
    """The fraction of the target reached (>= 1 exactly when it is met)."""
    if op == "within":
        return min(value / target[0], target[1] / max(value, 1e-9))
    if op == ">=":
        return value / target
    return target / max(abs(value), 1e-9)


def target_table(summary: dict[str, float]) -> list[dict]:
    rows = []
    for k, op, t, text in TARGETS:
        value = summary.get(k)
        shown = f"{t[0]:g}..{t[1]:g}" if op == "within" else f"{op} {t:g}"
        reached = None if _missing(value) else _reached(value, op, t)
        rows.append({"score": k, "meaning": text, "target": shown, "value": value,
                     "met": None if reached is None else bool(reached >= 1), "reached": reached})
    return rows


def _strict(x):
    """Plain JSON (no NaN/Infinity tokens, which many parsers reject): NaN -> null, +-inf -> "inf"/"-inf"."""
    if isinstance(x, dict):
        return {k: _strict(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_strict(v) for v in x]
    if isinstance(x, float | np.floating):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf") if math.isinf(x) else float(x)
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    return x


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _plot(out: Path, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def plot_mouth(results: list[ClipResult], out: Path, shown: int = 5) -> None:
    """Mouth opening over time for the first clip of each speech group (then the next clips), up to `shown`."""
    scored = [r for r in results if "truth_opening" in r.tracks]
    firsts = [r for i, r in enumerate(scored) if r.group not in {q.group for q in scored[:i]}]
    clips = (firsts + [r for r in scored if r not in firsts])[:shown]

    def draw(plt):
        fig, axes = plt.subplots(max(1, len(clips)), 1, figsize=(9, 2.2 * max(1, len(clips))), squeeze=False)
        for ax, r in zip(axes[:, 0], clips):
            t = np.arange(len(r.tracks["truth_opening"])) / 25
            ax.plot(t, r.tracks["truth_opening"], "k", label="ground truth")
            ax.plot(t, r.tracks["real_opening"], color="tab:gray", alpha=0.7, label="read from real frames")
            ax.plot(t, r.tracks["generated_opening"], color="tab:red", label="read from generated frames")
            ax.set_title(f"{r.clip_id} ({r.group or 'no group'}): r = {_fmt(r.scores.get('lipsync/r'))}, "
                         f"amplitude = {_fmt(r.scores.get('lipsync/amplitude'))}", fontsize=9)
            ax.set_ylabel("opening")
        axes[0, 0].legend(loc="upper right", fontsize=7)
        axes[-1, 0].set_xlabel("seconds")
        return fig
    _plot(out, draw)


def plot_pose(result: ClipResult, out: Path) -> None:
    def draw(plt):
        fig, axes = plt.subplots(3, 1, figsize=(9, 6), sharex=True)
        t = np.arange(len(result.tracks["true_pose"])) / 25
        for i, (ax, name) in enumerate(zip(axes, ("yaw", "pitch", "roll"))):
            ax.plot(t, result.tracks["true_pose"][:, i], "k", label="ground truth")
            ax.plot(t, result.tracks["requested_pose"][:, i], "--", color="tab:blue", label="fed to speech2latent")
            ax.plot(t, result.tracks["generated_pose"][:, i], color="tab:red", label="read from generated frames")
            ax.set_ylabel(f"{name} (deg)")
        axes[0].legend(loc="upper right", fontsize=7)
        axes[0].set_title(f"{result.clip_id}: head pose", fontsize=9)
        axes[-1].set_xlabel("seconds")
        return fig
    _plot(out, draw)


def plot_targets(table: list[dict], out: Path) -> None:
    def draw(plt):
        fig, ax = plt.subplots(figsize=(8, 0.8 + 0.3 * len(table)))
        rows = [row for row in table if row["met"] is not None]
        for y, row in enumerate(rows):
            ax.barh(y, 1, color="#eee")
            ax.barh(y, min(row["reached"], 2), color="tab:green" if row["met"] else "tab:red", alpha=0.8)
            ax.text(0.02, y, f"{row['score']} = {_fmt(row['value'])} (target {row['target']})", va="center",
                    fontsize=8)
        ax.axvline(1, color="k", lw=1)
        ax.set_yticks([])
        ax.set_xlabel("fraction of the target reached (1 = met)")
        return fig
    _plot(out, draw)


GROUP_COLUMNS = ("r", "amplitude", "mae", "best_offset", "r_dae", "amplitude_dae")
GROUP_NAMES = {"tts_seen": "TTS, training voices", "tts_held_out": "TTS, held-out voice",
               "real_seen": "recorded, training speakers", "real_held_out": "recorded, held-out speaker",
               "user": "your recordings (--speech)"}


def group_table(summary: dict[str, float]) -> list[str]:
    """summary.md lines: the lip-sync scores per speech group (none when no clip has a group)."""
    present = [g for g in GROUPS if f"lipsync/{g}/clips" in summary]
    if not present:
        return []
    lines = ["", "Lip sync by whose speech drives the clip (amplitude: std of the generated opening over the "
             "truth's; `_dae`: the DiffAE decoding the encoder's own latents):", "",
             "| speech | clips | " + " | ".join(GROUP_COLUMNS) + " |", "|---" * (len(GROUP_COLUMNS) + 2) + "|"]
    for g in present:
        values = " | ".join(_fmt(summary.get(f"lipsync/{g}/{c}")) for c in GROUP_COLUMNS)
        lines.append(f"| {GROUP_NAMES[g]} (`{g}`) | {int(summary[f'lipsync/{g}/clips'])} | {values} |")
    return lines


def write_report(out_dir: Path, results: list[ClipResult], summary: dict[str, float], meta: dict) -> dict:
    """Writes report.json, summary.md and the plots into out_dir; returns the report dict."""
    table = target_table(summary)
    report = {"meta": meta, "summary": summary, "targets": table,
              "clips": {r.clip_id: r.scores for r in results}}
    with atomic_path(out_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(_strict(report), indent=1, allow_nan=False))
    plot_mouth(results, out_dir / "mouth.png")
    if results and np.isfinite(results[0].tracks["generated_pose"]).any():
        plot_pose(results[0], out_dir / "pose.png")
    plot_targets(table, out_dir / "targets.png")
    lines = [f"# Evaluation of {meta.get('dae')} + {meta.get('s2l')}", "",
             f"{len(results)} {meta.get('split')} clips, {meta.get('steps')} DDIM steps (the inverted-x_T "
             f"reconstruction: {meta.get('invert_steps')} to invert, {meta.get('invert_steps')} to decode), pose "
             f"{'given' if meta.get('pose_given') else 'predicted'}, seed {meta.get('seed')}.", "",
             "| score | target | value | met |", "|---|---|---|---|"]
    lines += [f"| {row['meaning']} (`{row['score']}`) | {row['target']} | {_fmt(row['value'])} | "
              f"{ {True: 'yes', False: 'no', None: 'n/a'}[row['met']] } |" for row in table]
    lines += group_table(summary)
    lines += ["", "| other score | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in summary.items()
              if k not in {row["score"] for row in table} and not any(k.startswith(f"lipsync/{g}/") for g in GROUPS)]
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return report
