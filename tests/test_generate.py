"""Generation with the tiny DiffAE + speech2latent runs: the CLI end to end on held-out speech, pose
control, the reference frame, streaming against offline, and bad input (clear error, exit 2, no mp4)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import first_test_clip, write_audio
from daetalker_jax.errors import UserError
from daetalker_jax.media import read_mp4
from daetalker_jax.talker import OFFLINE, STREAMING, Talker, Windows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def talker(dae_run, s2l_run) -> Talker:
    return Talker(dae_run, s2l_run, steps=5, batch_frames=16)


def _generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daetalker_jax.generate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_cli_writes_a_video_as_long_as_the_speech(dae_run, s2l_run, speech, tmp_path):
    from daetalker_jax.media import resample

    mp3 = write_audio(tmp_path / "speech.mp3", resample(speech, 16000, 44100), 44100, "mp3", channels=2)
    out = tmp_path / "out.mp4"
    result = _generate("--audio", str(mp3), "--dae", str(dae_run), "--s2l", str(s2l_run), "--out", str(out),
                       "--steps", "4", "--pose", "yaw=10,pitch=-5")
    assert result.returncode == 0, result.stderr[-2000:]
    video = read_mp4(out)
    assert video.frames.shape[1:] == (32, 32, 3) and video.fps == 25
    audio_s = len(video.audio) / video.sr
    assert abs(len(video.frames) / 25 - audio_s) <= 1 / 25 + 0.03, (len(video.frames), audio_s)   # AAC pads a bit
    assert "s per second of video" in result.stdout


def test_streaming_into_a_new_folder_at_another_video_size(dae_run, s2l_run, speech, tiny_corpus, tmp_path):
    """--stream creates the output folder as the offline path does; --video-size resizes the written frames; the
    pose comes from a reference video (`video:`) and x_T from a reference frame."""
    from PIL import Image

    clip = first_test_clip(tiny_corpus)
    Image.fromarray(read_mp4(clip).frames[0]).save(tmp_path / "ref.png")
    wav = write_audio(tmp_path / "speech.wav", speech, 16000, "pcm_s16le")
    out = tmp_path / "new" / "sub" / "o.mp4"
    result = _generate("--audio", str(wav), "--dae", str(dae_run), "--s2l", str(s2l_run), "--out", str(out),
                       "--steps", "2", "--stream", "--video-size", "64", "--pose", f"video:{clip}",
                       "--ref-frame", str(tmp_path / "ref.png"))
    assert result.returncode == 0, result.stderr[-2000:]
    video = read_mp4(out)
    assert video.frames.shape[1:] == (64, 64, 3) and len(video.frames) == math.ceil(len(speech) / 640)


def test_pose_from_a_reference_video_follows_its_head(tiny_corpus):
    """`--pose video:clip.mp4` measures the clip's head pose as `prepare` does: one row per frame, its yaw
    following the rendered head's (r 0.95 on this 64 px clip; PnP on the rendered face is offset by a few
    degrees, so only the correlation is checked)."""
    from daetalker_jax.generation.pose import parse_pose

    clip = first_test_clip(tiny_corpus)
    truth = json.loads(clip.with_suffix(".json").read_text())["frames"]
    pose = parse_pose(f"video:{clip}")
    assert pose.shape == (len(truth["yaw"]), 3) and np.isfinite(pose).all()
    assert np.corrcoef(pose[:, 0], truth["yaw"])[0, 1] > 0.8


def test_pose_control_and_shared_noise(talker, speech):
    z_pred, pose_pred = talker.latents(speech)
    n = math.ceil(len(speech) / 640)
    assert z_pred.shape == (n, 32) and pose_pred.shape == (n, 3)
    z_a, used_a = talker.latents(speech, np.array([[0.0, 0.0, 0.0]]))
    z_b, _ = talker.latents(speech, np.array([[20.0, 10.0, -5.0]]))
    np.testing.assert_array_equal(used_a, np.zeros((n, 3)))
    assert np.abs(z_a - z_b).mean() > 1e-3
    x_T = talker.noise(seed=3)
    frames = np.stack(list(talker.frames(z_a[:20], x_T)))
    assert frames.shape == (20, 32, 32, 3) and frames.dtype == np.uint8
    again = np.stack(list(talker.frames(z_a[:20], talker.noise(seed=3))))
    np.testing.assert_array_equal(frames, again)   # the same x_T and latents: the same video
    other = np.stack(list(talker.frames(z_a[:20], talker.noise(seed=4))))
    assert np.abs(frames.astype(int) - other).mean() > 1


def test_windows_match_one_pass(talker, speech):
    """Offline windows (small ones here, to get several) agree with one window over the whole clip."""
    whole, _ = talker.latents(speech, win=Windows(chunk=1000, left=0, right=0))
    small, _ = talker.latents(speech, win=Windows(chunk=20, left=30, right=15))
    err = np.abs(small - whole).max() / np.abs(whole).max()
    assert err < 0.05, err
    assert OFFLINE.chunk + OFFLINE.left + OFFLINE.right >= 500


def test_streaming_emits_early_and_matches_offline(talker, speech):
    chunks = [speech[i:i + 1600] for i in range(0, len(speech), 1600)]   # 0.1 s chunks
    consumed = []

    def source():
        for k, c in enumerate(chunks):
            consumed.append(k)
            yield c

    stream = talker.stream(source(), seed=1)
    first = next(stream)
    assert len(consumed) < len(chunks), "the first frame must come before the audio ends"
    frames = np.stack([first, *stream])
    n = math.ceil(len(speech) / 640)
    assert len(frames) == n
    z, _ = talker.latents(speech)
    offline = np.stack(list(talker.frames(z, talker.noise(seed=1))))
    diff = np.abs(frames.astype(np.float64) - offline).mean()
    assert diff < 2.0, diff   # mean absolute difference in 0..255 levels


@pytest.mark.parametrize("given", [False, True])
def test_streamed_latents_and_pose_match_offline(talker, speech, given):
    """What streaming feeds the decoder: its latents (and pose, predicted or given) against the offline pass over
    the whole clip. The clip (2.8 s) is shorter than the streaming window's 4 s of past, so the last window hears
    all of it, as the offline pass does: its frames must agree to float32 rounding. Earlier windows hear only the
    clip's start (and remove that part's own mean log-mel, speech2latent's per-utterance normalisation), so there
    the latents may differ by a few per cent of their range."""
    n = math.ceil(len(speech) / 640)
    assert n < STREAMING.left
    pose = np.stack([np.linspace(-10, 10, n), np.zeros(n), np.full(n, 3.0)], 1) if given else None
    chunks = (speech[i:i + 640] for i in range(0, len(speech), 640))
    parts = list(talker.stream_latents(chunks, pose=pose))
    z = np.concatenate([p[0] for p in parts])
    used = np.concatenate([p[1] for p in parts])
    z_off, used_off = talker.latents(speech, pose)
    assert z.shape == z_off.shape and len(parts) > 1
    last = len(parts[-1][0])
    np.testing.assert_allclose(z[-last:], z_off[-last:], rtol=1e-4, atol=1e-4 * np.abs(z_off).max())
    np.testing.assert_allclose(used[-last:], used_off[-last:], rtol=1e-4, atol=1e-4)
    err = np.abs(z - z_off).max() / np.abs(z_off).max()
    assert err < 0.05, err
    if given:
        np.testing.assert_array_equal(used, pose.astype(np.float32))


def test_reference_frame_sets_x_T(talker, tmp_path):
    from PIL import Image

    image = (np.random.default_rng(0).random((48, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "ref.png")
    x_T = np.asarray(talker.noise(ref_frame=tmp_path / "ref.png"))
    assert x_T.shape == (32, 32, 3) and np.isfinite(x_T).all()
    assert np.abs(x_T - np.asarray(talker.noise(seed=0))).mean() > 0.1
    with pytest.raises(UserError, match="reference frame"):
        talker.noise(ref_frame=tmp_path / "missing.png")


def test_mismatched_checkpoints_are_refused(tiny_dataset32, s2l_run, tmp_path):
    from configs import dae
    from conftest import mesh_of
    from daetalker_jax.trainers.base import Trainer
    from daetalker_jax.trainers.dae import DAETask

    c = dae.get_config("tiny")
    c.data_dir, c.num_steps, c.checkpoint_every, c.model.z_channels = str(tiny_dataset32), 1, 1, 16
    Trainer(c, tmp_path / "dae16", DAETask(c), mesh=mesh_of(1)).run()
    with pytest.raises(UserError, match="do not belong together"):
        Talker(tmp_path / "dae16", s2l_run)


def test_contact_sheet_of_a_video_made_from_a_corpus_clip(talker, tiny_corpus, tiny_dataset32, tmp_path, capsys):
    from PIL import Image

    from daetalker_jax.generation.sheet import contact_sheet, main
    from daetalker_jax.synth.probe import clip_frames

    clip = first_test_clip(tiny_corpus)
    summary = talker.generate(clip, tmp_path / "talking.mp4", progress=False)
    assert summary["frames"] == len(read_mp4(clip).frames)   # same speech, same number of frames
    sheet = contact_sheet(tmp_path / "talking.mp4", clip, tiny_dataset32, tmp_path / "sheet.png")
    assert sheet["frames"] == summary["frames"] and sheet["opening_amplitude"] >= 0
    # a 20-step model may leave the mouth still: a constant track has no correlation (NaN) and amplitude 0
    assert -1 <= sheet["opening_r"] <= 1 or (math.isnan(sheet["opening_r"]) and sheet["opening_amplitude"] == 0)
    assert sheet["probe_r_real"] > 0.5, sheet    # the probe reads real crops of a held-out clip
    # the real crops given as the "generated" video: the sheet must score them as it scores the real row
    real = contact_sheet(tmp_path / "talking.mp4", clip, tiny_dataset32, tmp_path / "real.png",
                         generated=clip_frames(tiny_dataset32, "test")[clip.stem])
    assert real["opening_r"] == pytest.approx(real["probe_r_real"], abs=1e-9)
    assert real["opening_amplitude"] == pytest.approx(real["probe_amplitude_real"], abs=1e-9)
    assert real["probe_amplitude_real"] > 0.5
    width, height = Image.open(tmp_path / "sheet.png").size
    assert width > 800 and height > 400
    # the sheet CLI draws the same sheet and prints its numbers
    capsys.readouterr()
    assert main(["--video", str(tmp_path / "talking.mp4"), "--clip", str(clip), "--data", str(tiny_dataset32),
                 "--out", str(tmp_path / "cli.png")]) == 0
    printed = capsys.readouterr().out
    assert f"r = {sheet['opening_r']:.2f}, amplitude {sheet['opening_amplitude']:.2f}" in printed
    assert f"over {sheet['frames']} frames" in printed
    assert Image.open(tmp_path / "cli.png").size == (width, height)


def test_the_diffae_alone_reconstructs_real_crops_and_bench_real_face_scores_them(talker, dae_run, tiny_dataset32,
                                                                                   speech, tmp_path):
    """Talker(dae, None): the DiffAE without speech2latent (what `bench/real_face.py score` uses) reconstructs as
    the full Talker does and refuses speech; the bench's scores are the PSNR / SSIM of those reconstructions."""
    from PIL import Image

    from bench.real_face import SHOWN, score
    from daetalker_jax.metrics.fidelity import psnr, ssim
    from daetalker_jax.synth.probe import clip_frames

    alone = Talker(dae_run, None, steps=5, batch_frames=16)
    real = np.concatenate([v for _, v in sorted(clip_frames(tiny_dataset32, "test").items())])
    z, inverted = alone.reconstruct(real, 3)
    z_full, inverted_full = talker.reconstruct(real, 3)
    np.testing.assert_array_equal(z, z_full)
    np.testing.assert_array_equal(inverted, inverted_full)
    with pytest.raises(UserError, match="DiffAE alone"):
        alone.latents(speech)
    result = score(dae_run, tiny_dataset32, tmp_path, split="test", steps=5, invert_steps=3, seed=0, batch_frames=16,
                   talker=alone)
    shared = np.stack(list(alone.frames(z, alone.noise(0))))
    assert result["frames"] == len(real) and result["invert_steps"] == 3
    assert result["psnr_inverted"] == pytest.approx(psnr(inverted, real), abs=1e-9)
    assert result["ssim_shared_xT"] == pytest.approx(ssim(shared, real), abs=1e-9)
    assert json.loads((tmp_path / "real_face.json").read_text()) == result
    assert Image.open(tmp_path / "real_face.png").size == (90 + SHOWN * 32, 3 * 32)
