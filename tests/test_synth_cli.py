"""`python -m daetalker_jax.synth` end to end: help, a run with a user speech file and preview, every
bad input from the issue (clear message, exit code 2, no clip written), and resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_audio
from PIL import Image

from daetalker_jax.media import SAMPLE_RATE, read_mp4
from daetalker_jax.synth import speech

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--size", "64", "--minutes", "0.01", "--workers", "1", "--no-preview"]


def synth(*args: str | os.PathLike, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daetalker_jax.synth", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_options():
    result = synth("--help")
    assert result.returncode == 0
    for flag in ("--minutes", "--size", "--seed", "--out", "--workers", "--identities", "--speech"):
        assert flag in result.stdout


def test_run_with_user_speech_writes_clips_manifest_and_preview(tmp_path):
    voice = speech.synthesize("Read verse out loud for pleasure.", "en-gb", 150, 40)
    user = write_audio(tmp_path / "mine.flac", voice, SAMPLE_RATE, "flac")
    out = tmp_path / "corpus"
    result = synth("--out", out, "--size", "96", "--minutes", "0.01", "--workers", "2", "--speech", user)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    user_row = [c for c in manifest["clips"] if c["speech_file"]]
    assert len(user_row) == 1 and user_row[0]["split"] == "test"
    video = read_mp4(out / user_row[0]["file"])
    assert video.frames.shape[1:] == (96, 96, 3)
    assert abs(len(video.audio) - len(voice)) <= SAMPLE_RATE // 25
    preview = Image.open(out / "preview.png")
    assert preview.size[0] > 600 and preview.size[1] > 300
    assert "preview:" in result.stdout


def _mp4s(out: Path) -> list[Path]:
    """Finished clips (temporary files start with a dot)."""
    return [p for p in out.glob("clips/*.mp4") if not p.name.startswith(".")]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUTS = {
    # name: (extra arguments built from tmp_path, part of the expected message)
    "unknown voice": (lambda d: ["--voices", "en-us,xx-nonexistent"], "unknown espeak-ng voice 'xx-nonexistent'"),
    "unknown held-out voice": (lambda d: ["--held-out-voices", "zz"], "unknown espeak-ng voice 'zz'"),
    "empty sentence list": (lambda d: ["--sentences", _write(d / "empty.txt", b"\n  \n")], "sentence list is empty"),
    "missing sentence file": (lambda d: ["--sentences", d / "nope.txt"], "does not exist"),
    "unwritable output folder": (lambda d: ["--out", _write(d / "a_file", b"x") / "sub"], "not writable"),
    "empty speech file": (lambda d: ["--speech", _write(d / "empty.wav", b"")], "is empty"),
    "corrupt speech file": (lambda d: ["--speech", _write(d / "bad.wav", b"RIFF\x00\x01junk" * 50)], "cannot decode"),
    "not audio": (lambda d: ["--speech", _write(d / "text.mp3", b"hello, I am text\n" * 100)], "cannot decode"),
    "image, not audio": (lambda d: ["--speech", _png(d / "face.png")], "no audio stream"),
    "missing speech file": (lambda d: ["--speech", d / "missing.wav"], "does not exist"),
    "silence only": (lambda d: ["--speech", write_audio(d / "quiet.wav", np.zeros(SAMPLE_RATE * 2, np.float32),
                                                         SAMPLE_RATE, "pcm_s16le")], "only silence"),
    "size out of range": (lambda d: ["--size", "32"], "--size must be within 64..512"),
}


def _png(path: Path) -> Path:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gives_clear_error_and_no_output(tmp_path, name):
    make_args, message = BAD_INPUTS[name]
    extra = [str(a) for a in make_args(tmp_path)]
    out = tmp_path / "out"
    args = ["--out", out, *FAST, *extra] if "--out" not in extra else [*FAST, *extra]
    result = synth(*args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not _mp4s(out) and not (out / "manifest.json").exists()


def test_kill_9_then_rerun_resumes_and_keeps_finished_clips(tmp_path):
    out = tmp_path / "corpus"
    args = [sys.executable, "-m", "daetalker_jax.synth", "--out", str(out), "--size", "64", "--minutes", "0.25",
            "--workers", "1", "--no-preview"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_mp4s(out)) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p.name: p.stat().st_mtime_ns for p in _mp4s(out)}
    assert len(done) >= 2 and not (out / "manifest.json").exists()
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["clips"]) > len(done)
    for name, mtime in done.items():
        assert (out / "clips" / name).stat().st_mtime_ns == mtime   # finished clips were not redone
    for row in manifest["clips"]:
        assert len(read_mp4(out / row["file"]).frames) == row["n_frames"]
    assert not [p for p in (out / "clips").iterdir() if p.name.startswith(".")]
