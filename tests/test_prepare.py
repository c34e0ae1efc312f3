"""`prepare`: synthetic corpus -> dataset (frame counts, mel alignment, sidecar pose), a real 30 fps /
44.1 kHz stereo multi-clip video made with ffmpeg, and every bad input landing in the summary."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import read_sidecar
from PIL import Image

from daetalker_jax.data import clip_cache, pipeline
from daetalker_jax.data.features import MELS_PER_FRAME
from daetalker_jax.media import SAMPLE_RATE, write_mp4

ROOT = Path(__file__).resolve().parents[1]


def test_synthetic_corpus_prepares_with_counts_alignment_and_sidecar_pose(tiny_corpus, tiny_dataset):
    corpus_dir, manifest = tiny_corpus
    data_dir, summary = tiny_dataset
    assert summary["clips"] == len(manifest["clips"]) and not summary["skipped"]
    assert summary["frames"] == sum(c["n_frames"] for c in manifest["clips"])
    for split in ("train", "val", "test"):
        clips = pipeline.data_source(str(data_dir), "clips", split)
        frames = pipeline.data_source(str(data_dir), "frames", split)
        assert len(clips) == len(manifest["splits"][split])
        assert len(frames) == sum(int(clips[i]["n_frames"]) for i in range(len(clips)))
        for i in range(len(clips)):
            ex = clips[i]
            n = int(ex["n_frames"])
            side = read_sidecar(corpus_dir, ex["clip_id"].decode())
            assert n == side["n_frames"]
            assert ex["mel"].shape == (MELS_PER_FRAME * n, 80) and len(ex["audio"]) == n * SAMPLE_RATE // 25
            expected = np.stack([side["frames"][k] for k in ("yaw", "pitch", "roll")], -1)
            np.testing.assert_allclose(ex["pose"], expected, atol=1e-6)
    image = pipeline.data_source(str(data_dir), "frames", "train")[0]["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8


def test_mel_frames_align_with_video_frames(tiny_dataset):
    data_dir, _ = tiny_dataset
    ex = pipeline.data_source(str(data_dir), "clips", "train")[0]
    n = int(ex["n_frames"])
    audio = ex["audio"].astype(np.float32).reshape(n, -1)
    rms = np.log(np.mean(audio**2, 1) + 1)                            # loudness of each video frame's audio
    mel = np.exp(ex["mel"]).sum(1).reshape(n, MELS_PER_FRAME).mean(1)  # mel energy of its 4 mel frames
    corr = {lag: np.corrcoef(rms[max(0, lag):n + min(0, lag)], np.log(mel)[max(0, -lag):n - max(0, lag)])[0, 1]
            for lag in (-2, -1, 0, 1, 2)}
    assert max(corr, key=corr.get) == 0 and corr[0] > 0.9, corr


def test_resumed_prepare_reuses_finished_clips(tiny_corpus, tiny_dataset, tmp_path):
    from daetalker_jax.data.prepare import PrepareConfig, prepare

    corpus_dir, _ = tiny_corpus
    data_dir, summary = tiny_dataset
    shutil.copytree(data_dir / "cache", tmp_path / "cache")
    shutil.copy(data_dir / "prepare.json", tmp_path / "prepare.json")
    kept = sorted(tmp_path.glob("cache/*.npz"))
    kept[0].unlink()                                    # one clip was not finished
    mtimes = {p.name: p.stat().st_mtime_ns for p in kept[1:]}
    again = prepare(corpus_dir / "manifest.json", tmp_path, PrepareConfig(size=64))
    assert again["frames"] == summary["frames"]
    assert all((tmp_path / "cache" / k).stat().st_mtime_ns == v for k, v in mtimes.items())


def test_ffmpeg_30fps_stereo_multi_clip_video_comes_out_at_25fps_16k_mono(tiny_corpus, tmp_path):
    """Three synthetic clips concatenated by ffmpeg into one 30 fps video with 44.1 kHz stereo AAC; no
    sidecar, so the face detector and face-mesh PnP provide the crop and the pose."""
    corpus_dir, manifest = tiny_corpus
    inputs = [corpus_dir / c["file"] for c in manifest["clips"][:3]]
    videos = tmp_path / "videos"
    videos.mkdir()
    real = videos / "talk.mp4"
    cmd = ["ffmpeg", "-v", "error", "-y"]
    for p in inputs:
        cmd += ["-i", str(p)]
    streams = "".join(f"[{i}:v][{i}:a]" for i in range(len(inputs)))
    cmd += ["-filter_complex", f"{streams}concat=n={len(inputs)}:v=1:a=1[v][a];[v]scale=256:256,fps=30[vo]",
            "-map", "[vo]", "-map", "[a]", "-ac", "2", "-ar", "44100", "-c:v", "libx264", "-c:a", "aac", str(real)]
    subprocess.run(cmd, check=True)
    with av.open(str(real)) as c:
        assert float(c.streams.video[0].average_rate) == 30 and c.streams.audio[0].channels == 2
        seconds = float(c.duration) / av.time_base
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.prepare", "--videos", str(videos), "--out", str(out),
                             "--size", "64", "--workers", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    clip = clip_cache.load_clip(out / "cache", "talk")
    n = clip.meta["n_frames"]
    assert abs(n / 25 - seconds) <= 2 / 25, (n, seconds)
    assert len(clip.audio) == n * SAMPLE_RATE // 25 and clip.mel.shape == (4 * n, 80)
    assert clip.meta["pose_source"] == "face mesh PnP" and np.isfinite(clip.pose).all()
    assert np.abs(clip.pose).max() < 45


def _video(path: Path, seconds: float, audio_seconds: float | None, fps: float = 25, face: bool = True,
           jitter: bool = False, turn: float = 1 / 9) -> Path:
    """A small test video: a rendered face turning its head (yaw 5 sin(turn k) degrees at frame k; or an empty
    room) with a tone, optionally at irregular times."""
    from daetalker_jax.synth.identity import Identity, background
    from daetalker_jax.synth.render import FrameState, Renderer

    n = int(seconds * fps)
    if face:
        renderer = Renderer(Identity.from_seed(1), 96)
        frames = [renderer.render(FrameState(yaw=5 * np.sin(turn * k), opening=0.3)) for k in range(n)]
    else:
        frames = [background(Identity.from_seed(1), 96)] * n
    tone = 0.2 * np.sin(np.arange(int((audio_seconds or 0) * SAMPLE_RATE)) / 9).astype(np.float32)
    audio = None if audio_seconds is None else tone
    if not jitter:
        write_mp4(path, frames, audio, fps=int(fps))
        return path
    write_mp4(path.with_name("steady_" + path.name), frames, audio, fps=int(fps))
    # Variable frame rate: ffmpeg re-times the frames to alternate 60 ms and 20 ms steps (in a millisecond time
    # base: the input's 1/25 s one would round them back onto the grid, two frames sharing a time), re-encoding
    # losslessly, so each frame decodes to the pixels of its steady original.
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(path.with_name("steady_" + path.name)), "-vf",
                    "setpts=(N*0.04+0.02*mod(N\\,2))/TB", "-fps_mode", "passthrough", "-enc_time_base", "1/1000",
                    "-video_track_timescale", "1000", "-c:v", "libx264", "-qp", "0", "-c:a", "copy", str(path)],
                   check=True)
    path.with_name("steady_" + path.name).unlink()
    return path


def test_bad_inputs_land_in_the_summary_and_only_good_clips_are_kept(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    good = _video(videos / "good.mp4", 3, 3)
    _video(videos / "no_audio.mp4", 3, None)
    _video(videos / "no_face.mp4", 3, 3, face=False)
    _video(videos / "vfr.mp4", 3, 3, jitter=True)
    _video(videos / "mismatch.mp4", 3, 5)
    _video(videos / "short.mp4", 1, 1)
    data = good.read_bytes()
    # an mp4 header, then noise (fixed: pure random bytes sometimes probe as a stream of another kind)
    (videos / "corrupt.mp4").write_bytes(data[:32] + np.random.default_rng(0).bytes(20000))
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "dangling.mp4").symlink_to(videos / "missing_target.mp4")
    expected = {"no_audio": "no audio stream", "no_face": "no face found", "vfr": "variable frame rate",
                "mismatch": "lengths differ", "short": "shorter than", "corrupt": "unreadable or corrupt",
                "truncated": "unreadable or corrupt", "dangling": "file not found"}
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.prepare", "--videos", str(videos), "--out", str(out),
                             "--size", "64", "--workers", "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    reasons = {Path(r["file"]).stem: r["reason"] for r in summary["skipped"]}
    assert set(reasons) == set(expected), reasons
    for stem, text in expected.items():
        assert text in reasons[stem], (stem, reasons[stem])
        assert f"skipped {videos / stem}.mp4" in result.stdout
    assert summary["clips"] == 1 and sorted(p.name for p in (out / "cache").iterdir()) == ["good.npz"]
    split = next(k for k, v in summary["splits"].items() if v)
    assert summary["frames"] == 75 and len(pipeline.data_source(str(out), "frames", split)) == 75


def test_allow_vfr_puts_a_variable_rate_video_on_the_25_fps_grid(tmp_path):
    """--allow-vfr keeps the variable-rate clip the sweep above skips, and its frames land where they were shown:
    re-timed by +20 ms on every other frame, each 25 fps slot still takes its own source frame (the nearest in
    time), so the clip's crops are those of the same frames at a steady 25 fps (the same pixels: the re-timing
    re-encodes losslessly), and not those one frame off (the head turns quickly here)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    _video(videos / "steady.mp4", 3, 3, turn=1.3)
    _video(videos / "vfr.mp4", 3, 3, jitter=True, turn=1.3)
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.prepare", "--videos", str(videos), "--out", str(out),
                             "--size", "64", "--crop", "full", "--workers", "1", "--allow-vfr"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clips"] == 2 and not summary["skipped"], summary["skipped"]

    def crops(stem: str) -> np.ndarray:
        clip = clip_cache.load_clip(out / "cache", stem)
        return np.stack([np.asarray(Image.open(io.BytesIO(j)), np.float32) for j in clip.jpegs()])

    steady, vfr = crops("steady"), crops("vfr")
    assert steady.shape == vfr.shape == (75, 64, 64, 3)
    aligned = np.abs(vfr - steady).mean()
    one_off = min(np.abs(vfr[1:] - steady[:-1]).mean(), np.abs(vfr[:-1] - steady[1:]).mean())
    assert aligned < 0.05 * one_off, (aligned, one_off)


def test_nothing_usable_is_a_clear_error(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    _video(videos / "silent.mp4", 3, None)
    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.prepare", "--videos", str(videos), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "no usable clips" in result.stderr and "no audio stream" in result.stderr
    assert not (out / "daetalker_data").exists()


@pytest.mark.parametrize("args,message", [
    (["--videos", "/nonexistent/dir"], "does not exist"),
    (["--crop", "left"], "--crop must be"),
    (["--size", "8"], "--size must be"),
])
def test_bad_arguments(tmp_path, args, message):
    base = {"--videos": str(tmp_path), "--out": str(tmp_path / "o")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = [x for kv in base.items() for x in kv]
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.prepare", *argv], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr


@pytest.mark.parametrize("crop,expected", [("full", [0, 0, 96]), ("20,10,56,60", [18, 10, 60]),
                                          ("30,30,80,80", [16, 16, 80])])
def test_full_frame_and_user_box_crops(tmp_path, crop, expected):
    """A user box becomes the square around its centre, shifted to stay inside the 96x96 frame."""
    from daetalker_jax.data.prepare import ClipJob, PrepareConfig, process_clip

    video = _video(tmp_path / "v.mp4", 2.2, 2.2)
    meta = process_clip(ClipJob(0, "v", str(video), "train"), PrepareConfig(size=32, crop=crop), tmp_path)
    assert meta["crop"] == expected and meta["n_frames"] == 55
    clip = clip_cache.load_clip(tmp_path, "v")
    assert Image.open(io.BytesIO(next(clip.jpegs()))).size == (32, 32)
