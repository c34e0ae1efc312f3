"""The synthetic corpus looks like a real dataset: decodable mp4s with matching audio, sidecars,
splits with held-out sentences and voice, deterministic output, resumable builds."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest
from conftest import TINY, read_sidecar

from daetalker_jax.media import FPS, SAMPLE_RATE, read_mp4
from daetalker_jax.synth import corpus


def test_every_clip_decodes_with_matching_frames_and_audio(tiny_corpus):
    out, manifest = tiny_corpus
    assert len(manifest["clips"]) >= 3
    for row in manifest["clips"]:
        video = read_mp4(out / row["file"])
        side = read_sidecar(out, row["clip_id"])
        assert video.frames.shape == (row["n_frames"], TINY.size, TINY.size, 3)
        assert video.fps == FPS
        audio_frames = len(video.audio) / SAMPLE_RATE * FPS
        assert abs(audio_frames - row["n_frames"]) <= 1.0, (audio_frames, row["n_frames"])
        for name in ("opening", "jaw", "width", "rounding", "closure", "yaw", "pitch", "roll", "blink"):
            assert len(side["frames"][name]) == row["n_frames"], name
        boxes = np.array(side["face_box"])
        assert boxes.shape == (row["n_frames"], 4)
        assert np.all((boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3]))
        assert np.all((boxes >= 0) & (boxes <= TINY.size))


def test_splits_hold_out_sentences_and_a_voice(tiny_corpus):
    _, manifest = tiny_corpus
    clips = {c["clip_id"]: c for c in manifest["clips"]}
    texts = {k: {clips[i]["text"] for i in ids} for k, ids in manifest["splits"].items()}
    voices = {k: {clips[i]["voice"] for i in ids} for k, ids in manifest["splits"].items()}
    assert all(manifest["splits"][k] for k in ("train", "val", "test"))
    assert not texts["train"] & (texts["val"] | texts["test"])
    held_out = set(manifest["held_out_voices"])
    assert voices["test"] & held_out and not (voices["train"] | voices["val"]) & held_out


def test_same_seed_gives_identical_clips_and_another_seed_differs(tiny_corpus, tmp_path):
    out, manifest = tiny_corpus
    settings = corpus.CorpusSettings(**{**TINY.__dict__, "minutes": 0.01})   # the first 3 clips of the plan
    again = corpus.build(settings, tmp_path / "again", workers=2)
    for row in again["clips"]:
        assert filecmp.cmp(out / row["file"], tmp_path / "again" / row["file"], shallow=False)
        assert read_sidecar(out, row["clip_id"]) == read_sidecar(tmp_path / "again", row["clip_id"])
    corpus.build(corpus.CorpusSettings(**{**settings.__dict__, "seed": 4}), tmp_path / "other")
    first = again["clips"][0]["clip_id"]
    assert read_sidecar(tmp_path / "other", first)["frames"] != read_sidecar(out, first)["frames"]


def test_resume_skips_finished_clips_and_redoes_unfinished_ones(tmp_path):
    settings = corpus.CorpusSettings(**{**TINY.__dict__, "minutes": 0.01})
    out = tmp_path / "c"
    first = corpus.build(settings, out)
    ids = [c["clip_id"] for c in first["clips"]]
    clips = out / "clips"
    mtimes = {i: (clips / f"{i}.mp4").stat().st_mtime_ns for i in ids}
    original = (clips / f"{ids[1]}.mp4").read_bytes()
    (clips / f"{ids[1]}.mp4").unlink()                        # as if killed before the final rename
    (clips / f".tmp-999-{ids[1]}.mp4").write_bytes(b"half")  # a half-written leftover
    second = corpus.build(settings, out)
    assert second == first
    assert (clips / f"{ids[1]}.mp4").read_bytes() == original
    assert not list(clips.glob(".tmp-*"))
    for i in (ids[0], ids[2]):
        assert (clips / f"{i}.mp4").stat().st_mtime_ns == mtimes[i]   # not rendered again


def test_resume_refuses_a_folder_made_with_other_settings(tmp_path):
    settings = corpus.CorpusSettings(**{**TINY.__dict__, "minutes": 0.01})
    corpus.build(settings, tmp_path)
    with pytest.raises(corpus.UserError, match="other settings"):
        corpus.build(corpus.CorpusSettings(**{**settings.__dict__, "size": 96}), tmp_path)
    assert json.loads((tmp_path / "corpus.json").read_text())["size"] == TINY.size
