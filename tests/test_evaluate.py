"""The evaluation suite end to end on the tiny runs, the targets table, and its bad-input errors."""

import json
import math
import subprocess
import sys

import numpy as np
from PIL import Image

from daetalker_jax.evaluation.report import target_table
from daetalker_jax.evaluation.suite import ClipResult, aggregate
from daetalker_jax.media import read_mp4


def test_aggregate_and_targets_by_hand():
    empty = np.zeros((1, 2, 2, 3), np.uint8)
    results = [ClipResult("a", {"psnr": 20.0, "lipsync/best_offset": 1.0}, empty, empty),
               ClipResult("b", {"psnr": 30.0, "lipsync/best_offset": -1.0, "lipsync/r": float("nan")}, empty, empty),
               ClipResult("c", {"psnr": 40.0, "lipsync/best_offset": 5.0}, empty, empty)]
    summary = aggregate(results)
    assert summary["psnr"] == 30.0                      # mean
    assert summary["lipsync/best_offset"] == 1.0        # median, not mean (5/3)
    assert math.isnan(summary["lipsync/r"])             # no clip has a finite value
    table = {row["score"]: row for row in target_table({"recon/psnr_inverted": 41.0, "lipsync/best_offset": -1.0,
                                                        "stability/flicker_ratio": 1.5})}
    assert table["recon/psnr_inverted"]["met"] is True and table["lipsync/best_offset"]["met"] is True
    assert table["stability/flicker_ratio"]["met"] is False and table["lipsync/r"]["met"] is None


def test_evaluate_cli_writes_the_report(dae_run, s2l_run, sync_run, tiny_dataset32, tiny_corpus, tmp_path):
    corpus_dir, manifest = tiny_corpus
    out = tmp_path / "report"
    cmd = [sys.executable, "-m", "daetalker_jax.evaluate", "--dae", str(dae_run), "--s2l", str(s2l_run),
           "--data", str(tiny_dataset32), "--corpus", str(corpus_dir / "clips"), "--out", str(out), "--steps", "2",
           "--sync", str(sync_run), "--no-fvd"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    def no_nan(token):
        raise AssertionError(f"report.json holds {token}, which strict JSON parsers reject")

    report = json.loads((out / "report.json").read_text(), parse_constant=no_nan)
    test_ids = sorted(c["clip_id"] for c in manifest["clips"] if c["split"] == "test")
    assert sorted(report["clips"]) == test_ids and report["meta"]["split"] == "test"
    seconds = report["meta"]["seconds"]   # wall time per phase (--no-fvd: no "fvd" entry)
    assert {"load", "speech2latent", "generate", "reconstruct", "read_pixels", "pixel_scores", "scores"} <= set(seconds)
    assert "fvd" not in seconds and all(v >= 0 for v in seconds.values())
    assert report["meta"]["invert_steps"] == 10      # the tiny DiffAE config's invert_steps (DiffAE's T)
    summary = report["summary"]
    for key in ("psnr", "ssim", "recon/psnr_inverted", "recon/psnr_shared_xT", "stability/flicker_ratio",
                "lipsync/r", "lipsync/best_offset", "lipsync/reader_r_on_real", "lipsync/r_dae", "sync/lse_d",
                "sync/lse_c_real", "sync/offset"):
        assert key in summary, key
    assert 0 < summary["recon/psnr_shared_xT"] < 60 and -1 <= summary["ssim"] <= 1
    assert summary["lipsync/reader_r_on_real"] > 0.5          # the probe reads the real held-out crops
    assert summary["sync/lse_d"] >= 0 and summary["sync/lse_c"] >= 0 and abs(summary["sync/offset"]) <= 15
    assert {row["score"] for row in report["targets"]} >= {"lipsync/r", "recon/psnr_inverted"}
    md = (out / "summary.md").read_text()
    assert "| score | target | value | met |" in md and "lipsync/r" in md
    first = report["clips"][sorted(report["clips"], key=test_ids.index)[0]]
    video = read_mp4(out / "sample.mp4")
    assert len(video.frames) == int(first["frames"]) and video.frames.shape[1:] == (32, 32, 3)
    for png in ("mouth.png", "targets.png", "sheet.png"):   # sheet: the scored frames and reader, first clip
        assert Image.open(out / png).size[0] > 300
    assert not list(out.glob("*.tmp*"))
