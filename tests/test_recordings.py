"""Real recorded speech in the corpus: the Asterisk fetcher (on .deb files built here, so no network), speech
folders, and the corpus plan that holds a whole speaker out."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import TINY, read_sidecar

from daetalker_jax.errors import UserError
from daetalker_jax.media import SAMPLE_RATE, load_audio
from daetalker_jax.synth import corpus, recordings
from daetalker_jax.synth.speech import TRAIN_VOICES, synthesize, trim_silence

SPEAKER = "en_US_f_Test"


def _g722(audio: np.ndarray) -> bytes:
    """Raw G.722 at 16 kHz, as the Asterisk packages hold it."""
    import io

    buf = io.BytesIO()
    with av.open(buf, "w", format="g722") as out:
        stream = out.add_stream("g722", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def _deb(root: Path, name: str, files: dict[str, bytes], out_dir: Path) -> None:
    """A real .deb (dpkg-deb --build) holding `files` at their paths."""
    pkg = root / name
    for rel, data in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_bytes(data)
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: 1.6.1-1\nArchitecture: all\n"
                                            "Maintainer: test <t@example.org>\nDescription: test\n")
    subprocess.run(["dpkg-deb", "--build", "-Zxz", str(pkg), str(out_dir / f"{name}_1.6.1-1_all.deb")],
                   check=True, capture_output=True)


@pytest.fixture(scope="module")
def prompts() -> dict[str, np.ndarray]:
    return {"hello": synthesize("Hello, thank you for calling.", "en-us", 155, 50),
            "digits/1": synthesize("one", "en-gb", 155, 50),
            "beep": np.sin(np.arange(8000) / 16000 * 2 * np.pi * 1000).astype(np.float32) * 0.3,
            "silence/1": np.zeros(16000, np.float32)}


def test_fetch_unpacks_decodes_and_leaves_out_tones_and_silences(prompts, tmp_path):
    out = tmp_path / "speech"
    (out / "debs").mkdir(parents=True)
    sounds = {f"usr/share/asterisk/sounds/{SPEAKER}/{k}.g722": _g722(v) for k, v in prompts.items()}
    sounds[f"usr/share/asterisk/sounds/{SPEAKER}/empty.g722"] = b""
    text = "; Core Asterisk Sounds\n\nhello: Hello, thank you for calling.\ndigits/1: one\nbeep: [a simple beep tone]\n"
    _deb(tmp_path, "asterisk-core-sounds-en-g722", sounds, out / "debs")
    _deb(tmp_path, "asterisk-core-sounds-en", {"usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz":
                                               gzip.compress(text.encode())}, out / "debs")
    meta = recordings.fetch_asterisk(out, ("en",))
    assert meta["speakers"][SPEAKER]["files"] == 2 and meta["speakers"][SPEAKER]["language"] == "en"
    files = sorted(str(p.relative_to(out / SPEAKER)) for p in (out / SPEAKER).rglob("*.flac"))
    assert files == ["digits/1.flac", "hello.flac"]               # no tone, no silence, no empty prompt
    assert recordings.transcripts(out / SPEAKER) == {"digits/1": "one", "hello": "Hello, thank you for calling."}
    decoded, original = load_audio(out / SPEAKER / "hello.flac"), prompts["hello"]
    assert abs(len(decoded) - len(original)) <= 160                 # G.722 frames: within 10 ms
    n = min(len(decoded), len(original)) - 40
    best = max(np.corrcoef(original[:n], decoded[lag:lag + n])[0, 1] for lag in range(40))
    assert best > 0.99, "G.722 (its filter bank delays by 22 samples) keeps the waveform"
    assert (out / "ATTRIBUTION.md").read_text().count("CC-BY") >= 2
    stamp = (out / SPEAKER / "hello.flac").stat().st_mtime_ns
    recordings.fetch_asterisk(out, ("en",))                         # a rerun decodes nothing again
    assert (out / SPEAKER / "hello.flac").stat().st_mtime_ns == stamp
    assert recordings.list_speakers(out) == {SPEAKER: [out / SPEAKER / "digits/1.flac", out / SPEAKER / "hello.flac"]}


def test_fetch_without_apt_or_packages_says_what_to_do(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}                     # no apt-get on this PATH
    proc = subprocess.run([sys.executable, "-m", "daetalker_jax.synth.recordings", "--out", str(tmp_path / "s"),
                           "--voices", "fr"], capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "apt-get is not available" in proc.stderr and str(tmp_path / "s" / "debs") in proc.stderr
    bad = subprocess.run([sys.executable, "-m", "daetalker_jax.synth.recordings", "--out", str(tmp_path / "s"),
                          "--voices", "de"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown de" in bad.stderr


def test_short_prompts_join_into_utterances():
    files = [Path(f"{i}.wav") for i in range(7)]
    groups = recordings.utterances(files, [1.5, 1.5, 1.5, 5.0, 0.5, 3.0, 1.0, 2.5][:7])
    assert groups == [tuple(files[:3]), (files[3],), tuple(files[4:7])]
    more = files + [Path("7.wav")]
    assert recordings.utterances(more, [1.5, 1.5, 1.5, 5.0, 0.5, 3.0, 1.0, 2.5])[-1] == (more[7],)   # 2.5 >= 4 / 2
    assert recordings.utterances(files[:3], [4.0, 4.0, 1.0]) == [(files[0],), tuple(files[1:3])]   # a short tail joins


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory) -> Path:
    """Three 'speakers' (espeak-ng voices standing in for recordings), four prompts each, with transcripts."""
    root = tmp_path_factory.mktemp("speech")
    lines = ["Please hold the line.", "Your call is important.", "Press one for sales.", "Goodbye for now."]
    for voice, speaker in zip(TRAIN_VOICES[:3], ("spk_a", "spk_b", "spk_c")):
        (root / speaker).mkdir()
        for j, line in enumerate(lines):
            audio = synthesize(line, voice, 160, 50)
            with av.open(str(root / speaker / f"p{j}.wav"), "w") as out:
                stream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
                frame = av.AudioFrame.from_ndarray((audio * 32767).astype(np.int16)[None], format="s16", layout="mono")
                frame.rate = SAMPLE_RATE
                for packet in [*stream.encode(frame), *stream.encode(None)]:
                    out.mux(packet)
        (root / speaker / "transcripts.tsv").write_text("".join(f"p{j}\t{t}\n" for j, t in enumerate(lines)))
    (root / "recordings.json").write_text(json.dumps({"held_out": ["spk_c"]}))
    return root


def test_plan_holds_a_whole_speaker_out_and_labels_every_group(speech_dir):
    settings = corpus.CorpusSettings(**{**TINY.__dict__, "minutes": 0.3, "speech_dir": str(speech_dir),
                                        "held_out_speakers": ("spk_c",), "real_share": 0.5})
    clips = corpus.plan(settings)
    real = [c for c in clips if c.recordings]
    assert {c.group for c in real} == {"real_seen", "real_held_out"}
    assert all(c.split == "test" and c.voice == "spk_c" for c in real if c.group == "real_held_out")
    assert {c.voice for c in real if c.group == "real_seen"} == {"spk_a", "spk_b"}
    assert {c.group for c in clips if not c.recordings} == {"tts_seen", "tts_held_out"}
    assert Counter(c.split for c in real if c.group == "real_seen")["train"] >= 1
    for c in real:   # prompts joined in file order until JOIN_SECONDS, with their transcripts
        assert all(Path(f).parent.name == c.voice for f in c.recordings)
        assert c.text and c.text.split(".")[0] + "." in "Please hold the line. Your call is important. " \
            "Press one for sales. Goodbye for now."
    tts_seconds = sum(corpus._estimate_seconds(c.text, c.speed) for c in clips if not c.recordings)
    assert tts_seconds < 0.3 * 60 * 0.5 + 6                   # half of the minutes (one clip of overshoot)
    assert corpus.plan(settings) == clips                       # deterministic


def test_recorded_clips_render_with_their_group_and_joined_audio(speech_dir, tmp_path):
    settings = corpus.CorpusSettings(**{**TINY.__dict__, "minutes": 0.05, "speech_dir": str(speech_dir),
                                        "held_out_speakers": ("spk_c",), "real_share": 0.6})
    manifest = corpus.build(settings, tmp_path / "c")
    rows = {r["clip_id"]: r for r in manifest["clips"]}
    assert manifest["held_out_speakers"] == ["spk_c"] and manifest["groups"]["real_held_out"] >= 1
    assert sum(manifest["groups"].values()) == len(rows)
    held = next(r for r in rows.values() if r["group"] == "real_held_out")
    side = read_sidecar(tmp_path / "c", held["clip_id"])
    assert side["group"] == "real_held_out" and side["voice"] == "spk_c"
    joined = np.concatenate([trim_silence(load_audio(f)) for f in held["recordings"]])
    assert side["n_frames"] == round(len(joined) / SAMPLE_RATE * 25)   # the mouth track covers the joined speech
    assert corpus.clip_group(side, manifest["held_out_voices"]) == "real_held_out"
    again = corpus.build(settings, tmp_path / "c")                # resumes: nothing to redo, same manifest
    assert again == manifest


def test_synth_cli_speech_dir_errors(speech_dir, tmp_path):
    def run(*extra):
        return subprocess.run([sys.executable, "-m", "daetalker_jax.synth", "--out", str(tmp_path / "x"),
                               "--minutes", "0.05", "--size", "64", "--no-preview", *extra],
                              capture_output=True, text=True)

    for extra, message in ((["--speech-dir", str(tmp_path / "missing")], "is not a folder"),
                           (["--speech-dir", str(speech_dir), "--held-out-speakers", "spk_z"], "spk_z"),
                           (["--speech-dir", str(speech_dir), "--held-out-speakers", "spk_a,spk_b,spk_c"],
                            "every speaker"),
                           (["--held-out-speakers", "spk_a"], "needs --speech-dir"),
                           (["--speech-dir", str(speech_dir), "--real-share", "1.5"], "--real-share")):
        proc = run(*extra)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "x" / "corpus.json").exists()   # refused before anything was written


def test_old_corpus_settings_still_resume(tmp_path):
    """A corpus.json written before the speech-folder settings existed matches the same command today."""
    settings = corpus.CorpusSettings(**{**TINY.__dict__, "minutes": 0.01})
    corpus.build(settings, tmp_path / "c")
    record = json.loads((tmp_path / "c" / "corpus.json").read_text())
    for key in ("speech_dir", "held_out_speakers", "real_share"):
        del record[key]
    (tmp_path / "c" / "corpus.json").write_text(json.dumps(record))
    corpus.build(settings, tmp_path / "c")
    with pytest.raises(UserError, match="other settings"):
        corpus.build(corpus.CorpusSettings(**{**settings.__dict__, "real_share": 0.7}), tmp_path / "c")
