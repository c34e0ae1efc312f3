"""The Gradio app end to end: started as a server on 127.0.0.1 with the tiny runs and called through its client,
as a user's script would (a video as long as the speech, pose control, and the CLI's message for bad input)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import write_audio
from daetalker_jax.media import read_mp4
from daetalker_jax.synth.speech import HELD_OUT_VOICES, synthesize

import gradio_client
from gradio_client.exceptions import AppError

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    tmp: Path       # the app's TMPDIR: where it keeps the videos it made


@pytest.fixture(scope="module")
def server(dae_run, s2l_run, tmp_path_factory) -> Iterator[Server]:
    """The app in a subprocess (terminated at the end, if a test has not stopped it); its URL once it answers."""
    port = _free_port()
    root = tmp_path_factory.mktemp("app")
    log, tmp = root / "server.log", root / "tmp"
    tmp.mkdir()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "daetalker_jax.app", "--dae", str(dae_run), "--s2l",
                                 str(s2l_run), "--host", "127.0.0.1", "--port", str(port), "--steps", "2"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the app did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield Server(url, proc, tmp)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server.url, verbose=False)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory) -> tuple[Path, float]:
    """A held-out sentence in the held-out voice (as test_generate.py makes it), as a 16 kHz wav."""
    speech = synthesize("The birch canoe slid on the smooth planks.", HELD_OUT_VOICES[0], 160, 50)
    path = write_audio(tmp_path_factory.mktemp("speech") / "speech.wav", speech, 16000, "pcm_s16le")
    return path, len(speech) / 16000


def _generate(client, wav: Path, mode: str = "predicted", angles=(0, 0, 0), pose_file=None, seed: int = 0) -> Path:
    pose = None if pose_file is None else gradio_client.handle_file(pose_file)
    out = client.predict(gradio_client.handle_file(wav), mode, *angles, pose, 2, seed, api_name="/generate")
    return Path(out["video"] if isinstance(out, dict) else out)


def test_requests_give_videos_as_long_as_the_speech(client, speech_wav, tmp_path):
    wav, seconds = speech_wav
    predicted = read_mp4(_generate(client, wav))
    assert len(predicted.frames) == math.ceil(seconds * 25)
    assert predicted.frames.shape[1:] == (32, 32, 3) and predicted.audio is not None
    # The request's parameters reach the decoder: another seed, another shared x_T, other frames.
    reseeded = read_mp4(_generate(client, wav, seed=1))
    assert np.abs(reseeded.frames.astype(int) - predicted.frames).mean() > 1
    # Pose control runs end to end. Its frames are not compared with the predicted pose's: the session's DiffAE
    # is trained for 2 steps, so its decoder does not yet depend on z (byte-identical frames for any latents);
    # test_generate.py checks that the pose changes the latents.
    turned = read_mp4(_generate(client, wav, "constant angles", (20, 10, -5)))
    assert turned.frames.shape == predicted.frames.shape and turned.audio is not None
    track = tmp_path / "pose.csv"
    track.write_text("yaw,pitch,roll\n" + "".join(f"{k / 2},0,{-k / 4}\n" for k in range(30)))
    assert len(read_mp4(_generate(client, wav, "pose file", pose_file=track)).frames) == len(predicted.frames)


def test_bad_input_reaches_the_client_as_the_cli_message(client, speech_wav, tmp_path):
    wav, _ = speech_wav
    silent = write_audio(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000, "pcm_s16le")
    with pytest.raises(AppError, match="silent"):
        _generate(client, silent)
    bad_pose = tmp_path / "pose.csv"
    bad_pose.write_text("yaw,pitch,roll\n1,2,3\n4,five,6\n")
    with pytest.raises(AppError, match="line 3"):
        _generate(client, wav, "pose file", pose_file=bad_pose)
    with pytest.raises(AppError, match="needs a CSV"):
        _generate(client, wav, "pose file")
    with pytest.raises(AppError, match="no speech"):
        client.predict(None, "predicted", 0, 0, 0, None, 2, 0, api_name="/generate")


def test_the_pages_pose_controls_become_the_clis_pose(tmp_path):
    """What each pose mode of the page hands to generation, as numbers: the sliders' angles for every frame, the
    uploaded CSV's rows, nothing (predicted) whatever the sliders say; a tiny exponent-free rendering of small
    angles."""
    from daetalker_jax.app import pose_spec
    from daetalker_jax.generation.pose import parse_pose

    np.testing.assert_allclose(parse_pose(pose_spec("constant angles", 20, 10.5, -5, None)), [[20, 10.5, -5]])
    np.testing.assert_allclose(parse_pose(pose_spec("constant angles", 1e-7, -0.25, 0, None)), [[0, -0.25, 0]])
    track = tmp_path / "pose.csv"
    rows = [(k / 2, 1.5, -k / 4) for k in range(30)]
    track.write_text("yaw,pitch,roll\n" + "".join(f"{y},{p},{r}\n" for y, p, r in rows))
    np.testing.assert_allclose(parse_pose(pose_spec("pose file", 9, 9, 9, str(track))), rows)
    assert parse_pose(pose_spec("predicted", 20, 10, -5, str(track))) is None


def test_the_page_starts_at_the_command_lines_steps(server):
    """--steps sets the DDIM slider's starting value (2 here; the app's default is 20)."""
    with urllib.request.urlopen(server.url + "config", timeout=10) as r:
        config = json.load(r)
    sliders = [c["props"] for c in config["components"] if str(c.get("props", {}).get("label")).startswith("DDIM")]
    assert len(sliders) == 1 and sliders[0]["value"] == 2 and (sliders[0]["minimum"], sliders[0]["maximum"]) == (1, 100)


def test_stopping_the_app_removes_its_videos(server, client, speech_wav):
    """SIGTERM (what a service manager sends) stops the app as Ctrl-C does: it exits and deletes the folder of
    videos it made. Runs last: it stops the module's server."""
    _generate(client, speech_wav[0])
    folders = list(server.tmp.glob("daetalker-app-*"))
    assert len(folders) == 1 and any(folders[0].glob("*.mp4"))
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=30)
    assert not folders[0].exists()
