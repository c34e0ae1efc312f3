"""The evaluation suite end to end on the tiny runs, the targets table, and its bad-input errors."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from daetalker_jax.evaluation.report import group_table, target_table
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


def test_lipsync_scores_per_speech_group_and_the_amplitude_target():
    e = np.zeros((1, 2, 2, 3), np.uint8)
    results = [ClipResult("a", {"lipsync/r": 0.9, "lipsync/amplitude": 0.5, "psnr": 20.0}, e, e, group="tts_seen"),
               ClipResult("b", {"lipsync/r": 0.7, "lipsync/amplitude": 0.7, "psnr": 30.0}, e, e, group="tts_seen"),
               ClipResult("c", {"lipsync/r": 0.4, "lipsync/amplitude": 1.1, "lipsync/best_offset": 2.0}, e, e,
                          group="real_held_out"),
               ClipResult("d", {"lipsync/r": 0.1}, e, e)]                # no group: only in the overall means
    summary = aggregate(results)
    assert summary["lipsync/r"] == np.mean([0.9, 0.7, 0.4, 0.1]) and summary["psnr"] == 25.0
    assert summary["lipsync/tts_seen/r"] == 0.8 and summary["lipsync/tts_seen/amplitude"] == 0.6
    assert summary["lipsync/tts_seen/clips"] == 2 and summary["lipsync/real_held_out/clips"] == 1
    assert summary["lipsync/real_held_out/r"] == 0.4 and summary["lipsync/real_held_out/best_offset"] == 2.0
    assert "lipsync/user/r" not in summary and "lipsync/tts_seen/psnr" not in summary
    table = {row["score"]: row for row in target_table({**summary, "lipsync/tts_held_out/amplitude": 1.2})}
    assert table["lipsync/amplitude"]["met"] is False and table["lipsync/amplitude"]["target"] == "0.85..1.15"
    assert table["lipsync/tts_held_out/amplitude"]["met"] is False and table["lipsync/real_held_out/r"]["met"] is False
    assert table["lipsync/real_held_out/amplitude"]["met"] is True          # >= 0.8
    lines = "\n".join(group_table(summary))
    assert "| TTS, training voices (`tts_seen`) | 2 | 0.8 | 0.6 |" in lines and "real_held_out" in lines
    assert "user" not in lines


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
    groups = {g: sum(c["split"] == "test" and c["group"] == g for c in manifest["clips"])
              for g in ("tts_seen", "tts_held_out")}
    assert groups["tts_held_out"] > 0
    for group, count in groups.items():   # the tiny corpus' test clips: training and held-out TTS voices
        assert summary.get(f"lipsync/{group}/clips", 0) == count
        assert (f"lipsync/{group}/amplitude" in summary) == (count > 0)
    assert summary["lipsync/amplitude"] >= 0 and "lipsync/amplitude_dae" in summary
    md = (out / "summary.md").read_text()
    assert "| score | target | value | met |" in md and "lipsync/r" in md and "TTS, held-out voice" in md
    _recompute_first_clip(report, dae_run, s2l_run, tiny_dataset32, corpus_dir / "clips")
    first = report["clips"][sorted(report["clips"], key=test_ids.index)[0]]
    video = read_mp4(out / "sample.mp4")
    assert len(video.frames) == int(first["frames"]) and video.frames.shape[1:] == (32, 32, 3)
    for png in ("mouth.png", "targets.png", "sheet.png"):   # sheet: the scored frames and reader, first clip
        assert Image.open(out / png).size[0] > 300
    assert not list(out.glob("*.tmp*"))


def _recompute_first_clip(report: dict, dae_run, s2l_run, data, corpus_clips):
    """The report's numbers for the split's first clip against the same clip made and scored by hand through the
    public API (Talker, the metrics): catches clips or frames paired wrongly in the suite's batching across clips,
    and the speech fed at the wrong scale."""
    from daetalker_jax.data.pipeline import clip_audio, clip_name, data_source
    from daetalker_jax.metrics.fidelity import psnr, ssim
    from daetalker_jax.metrics.lipsync import sync_scores
    from daetalker_jax.synth.probe import MouthProbe, clip_frames, opening_track
    from daetalker_jax.talker import Talker

    ex = data_source(str(data), "clips", "test")[0]
    clip_id = clip_name(ex)
    talker = Talker(dae_run, s2l_run, steps=2)
    z, _ = talker.latents(clip_audio(ex), np.asarray(ex["pose"], np.float64))
    real = clip_frames(data, "test")[clip_id]
    n = min(len(z), len(real))
    generated = np.stack(list(talker.frames(z[:n], talker.noise(0))))
    scores = report["clips"][clip_id]   # decoded in other batches there: equal up to float rounding of a few pixels
    assert scores["frames"] == n
    assert scores["psnr"] == pytest.approx(psnr(generated, real[:n]), abs=0.05)
    assert scores["ssim"] == pytest.approx(ssim(generated, real[:n]), abs=1e-3)
    probe = MouthProbe.from_clips(clip_frames(data, "train"), corpus_clips)
    truth = opening_track(corpus_clips, clip_id)[:n]
    expected = sync_scores(probe(generated), truth)
    for key in ("r", "mae", "amplitude"):
        got, want = scores[f"lipsync/{key}"], expected[key]
        assert (got is None and math.isnan(want)) or got == pytest.approx(want, abs=0.02), key
