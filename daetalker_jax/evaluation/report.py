"""The evaluation report: report.json (every number), summary.md (the targets table), plots people look at
(mouth track overlay, pose curves, metric bars vs targets), one generated mp4 and its contact sheet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from daetalker_jax.errors import atomic_path
from daetalker_jax.evaluation.suite import ClipResult

# (score, comparison, target, what it means) — the reference run's quality targets.
TARGETS = [
    ("recon/psnr_inverted", ">=", 40.0, "DiffAE reconstruction PSNR, inverted x_T (dB)"),
    ("recon/psnr_shared_xT", ">=", 28.0, "DiffAE reconstruction PSNR, one shared random x_T (dB)"),
    ("lipsync/r", ">=", 0.9, "mouth opening vs the analytic track, Pearson r"),
    ("lipsync/best_offset", "abs<=", 1.0, "sync offset maximising r (frames)"),
    ("pose/yaw_median_abs_deg", "<=", 2.0, "yaw error when the pose is given, median (deg)"),
    ("stability/flicker_ratio", "<=", 1.2, "background flicker, generated / ground truth"),
]


def _meets(value: float, op: str, target: float) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return {">=": value >= target, "<=": value <= target, "abs<=": abs(value) <= target}[op]


def target_table(summary: dict[str, float]) -> list[dict]:
    return [{"score": k, "meaning": text, "target": f"{op} {t:g}", "value": summary.get(k),
             "met": _meets(summary.get(k), op, t)} for k, op, t, text in TARGETS]


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


def plot_mouth(results: list[ClipResult], out: Path, shown: int = 4) -> None:
    clips = [r for r in results if "truth_opening" in r.tracks][:shown]

    def draw(plt):
        fig, axes = plt.subplots(max(1, len(clips)), 1, figsize=(9, 2.2 * max(1, len(clips))), squeeze=False)
        for ax, r in zip(axes[:, 0], clips):
            t = np.arange(len(r.tracks["truth_opening"])) / 25
            ax.plot(t, r.tracks["truth_opening"], "k", label="ground truth")
            ax.plot(t, r.tracks["real_opening"], color="tab:gray", alpha=0.7, label="read from real frames")
            ax.plot(t, r.tracks["generated_opening"], color="tab:red", label="read from generated frames")
            ax.set_title(f"{r.clip_id}: r = {_fmt(r.scores.get('lipsync/r'))}", fontsize=9)
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
        fig, ax = plt.subplots(figsize=(8, 3.2))
        rows = [row for row in table if row["met"] is not None]
        for y, row in enumerate(rows):
            ax.barh(y, 1, color="#eee")
            op, target = row["target"].split()
            v, t = abs(row["value"]) if op == "abs<=" else row["value"], float(target)
            frac = min(v / t if op == ">=" else t / max(v, 1e-9), 2)
            ax.barh(y, frac, color="tab:green" if row["met"] else "tab:red", alpha=0.8)
            ax.text(0.02, y, f"{row['score']} = {_fmt(row['value'])} (target {row['target']})", va="center",
                    fontsize=8)
        ax.axvline(1, color="k", lw=1)
        ax.set_yticks([])
        ax.set_xlabel("fraction of the target reached (1 = met)")
        return fig
    _plot(out, draw)


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
    lines += ["", "| other score | value |", "|---|---|"]
    lines += [f"| `{k}` | {_fmt(v)} |" for k, v in summary.items() if k not in {row["score"] for row in table}]
    with atomic_path(out_dir / "summary.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return report
