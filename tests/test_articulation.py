"""The acoustic mouth track: closed in silence, open on voiced speech, leading the sound by LEAD_MS,
deterministic, and available for any speech file."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_audio

from daetalker_jax.media import SAMPLE_RATE, load_audio
from daetalker_jax.synth import articulation, speech


@pytest.fixture(scope="module")
def utterance() -> np.ndarray:
    """Real TTS speech with 0.5 s of silence on each side."""
    audio = speech.synthesize("Glue the sheet to the dark blue background.", "en-us", 150, 50)
    pad = np.zeros(SAMPLE_RATE // 2, np.float32)
    return np.concatenate([pad, audio, pad])


def test_closed_in_silence_and_open_in_speech(utterance):
    track = articulation.mouth_track(utterance)
    opening = track["opening"]
    assert np.all(opening[:8] < 0.02) and np.all(opening[-8:] < 0.02)   # the padded silence (>= 0.3 s)
    assert opening.max() > 0.6
    assert np.mean(opening[15:-15] > 0.2) > 0.4                         # open through much of the speech
    silence = articulation.mouth_track(np.zeros(SAMPLE_RATE, np.float32))
    assert np.all(silence["opening"] == 0)
    assert all(np.all((v >= 0) & (v <= 1)) for v in track.values())


def test_mouth_leads_the_sound_by_lead_ms(utterance):
    track = articulation.mouth_track_100hz(utterance)["jaw"]
    loud = articulation.loudness(utterance)
    lags = np.arange(-15, 16)
    corr = [np.corrcoef(track[max(0, -k):len(track) - max(0, k)], loud[max(0, k):len(loud) - max(0, -k)])[0, 1]
            for k in lags]
    best = lags[int(np.argmax(corr))] * 10   # ms by which the mouth precedes the loudness
    assert abs(best - articulation.LEAD_MS) <= 10, best


def test_deterministic_and_frame_count_matches_duration(utterance):
    a, b = articulation.mouth_track(utterance), articulation.mouth_track(utterance.copy())
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(a["opening"]) == round(len(utterance) / SAMPLE_RATE * 25)


@pytest.mark.parametrize("name,codec,rate,channels", [
    ("speech.wav", "pcm_s16le", 44100, 2), ("speech.flac", "flac", 22050, 1), ("speech.mp3", "libmp3lame", 48000, 2)])
def test_any_speech_file_gives_the_same_track(utterance, tmp_path, name, codec, rate, channels):
    from daetalker_jax.media import resample
    path = write_audio(tmp_path / name, resample(utterance, SAMPLE_RATE, rate), rate, codec, channels)
    loaded = load_audio(path)
    assert abs(len(loaded) - len(utterance)) < SAMPLE_RATE * 0.08   # codec padding only
    ref = articulation.mouth_track(utterance)["opening"]
    got = articulation.mouth_track(loaded)["opening"]
    n = min(len(ref), len(got))
    assert np.corrcoef(ref[:n], got[:n])[0, 1] > 0.9
