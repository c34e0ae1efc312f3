"""Speech augmentation on log-mel windows (data/augment.py): each operation against what its waveform version
does, the windows' time resampling for speed perturbation, and the model's per-utterance normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import resample_poly

from daetalker_jax.data.augment import FLOOR, SpeechAugment, resample_frames
from daetalker_jax.data.features import log_mel


@pytest.fixture(scope="module")
def mel(speech) -> np.ndarray:
    return log_mel(speech, len(speech) // 640)


def _centres() -> np.ndarray:
    return SpeechAugment()._bins[0]


def test_nothing_on_means_the_window_is_returned_as_is(mel):
    assert SpeechAugment()(mel, np.random.default_rng(0)) is mel


def test_gain_shifts_every_unfloored_bin_by_the_same_amount(mel):
    out = SpeechAugment(gain_db=12)(mel, np.random.default_rng(1))
    live = mel > FLOOR + 3
    shift = (out - mel)[live]
    gain_db = np.random.default_rng(1).uniform(-12, 12)           # the first draw of the same generator
    assert np.allclose(shift, gain_db / 10 * np.log(10), atol=1e-4)


def test_telephone_band_keeps_speech_band_and_removes_the_rest(mel):
    out = SpeechAugment(telephone=1)(mel, np.random.default_rng(0))
    centres = _centres()
    assert np.all(out[:, centres > 4000] == np.float32(FLOOR))     # 8 kHz resampling leaves nothing above 4 kHz
    band = (centres > 600) & (centres < 2500)
    assert np.abs(out[:, band] - mel[:, band]).max() < 0.1          # the 300-3400 Hz band passes (< 0.4 dB)
    flat = SpeechAugment(telephone=1)(np.zeros((3, 80), np.float32), np.random.default_rng(0))[0]
    assert np.all(flat[centres < 150] < -5) and np.all(flat[band] > -0.1)   # hum range cut by > 20 dB


@pytest.mark.parametrize("factor, up, down", [(1.1, 10, 11), (0.9, 10, 9)])
def test_speed_matches_log_mel_of_really_resampled_audio(speech, factor, up, down):
    """Speed perturbation on the mel (frequency scaling + the window's time resampling) against the log-mel of
    the audio really played `factor` times faster (polyphase resampling: tempo and pitch change together), over
    the bins and frames with speech. Measured: median error 0.39 / 0.38 nats, r 0.93 / 0.96; resampling the
    frames in time alone gives 1.5 nats and r 0.61."""
    fast = resample_poly(speech, up, down).astype(np.float32)
    truth = log_mel(fast, len(fast) // 640)
    squeezed = resample_frames(log_mel(speech, len(speech) // 640), len(truth))   # what _Window does in time
    out = SpeechAugment(speed=1)(squeezed, np.random.default_rng(0), speed=factor)
    live = (truth > FLOOR + 4) & (out > FLOOR + 4)
    err, plain = np.median(np.abs(out - truth)[live]), np.median(np.abs(squeezed - truth)[live])
    assert err < 0.5 and np.corrcoef(out[live], truth[live])[0, 1] > 0.9 and err < 0.4 * plain, (err, plain)


def test_vtlp_moves_formants_by_its_factor():
    """A spectral peak at 1 kHz read through the warp of alpha lands at alpha kHz (below the warp's knee)."""
    centres = _centres()
    aug = SpeechAugment(vtlp=1)
    fine = np.linspace(500, 1600, 2201)
    for alpha in (0.9, 1.0, 1.1):
        power = np.exp(-0.5 * ((centres - 1000) / 150) ** 2)[None] + 1e-4
        warped = aug._read_at(power, aug._vtlp_source(alpha))[0]
        peak = fine[np.argmax(np.interp(fine, centres, np.log(warped)))]
        assert abs(peak - 1000 * alpha) < 25, (alpha, peak)
    assert np.allclose(aug._vtlp_source(1.0), centres)


def test_noise_and_reverb_only_add_energy_and_reverb_decays(mel):
    noisy = SpeechAugment(noise=1)(mel, np.random.default_rng(5))
    assert np.all(noisy >= mel - 1e-5) and noisy.mean() > mel.mean()
    quiet = np.full((120, 80), FLOOR, np.float32)
    impulse = quiet.copy()
    impulse[10] = 0.0                                               # one loud frame
    tail = SpeechAugment(reverb=1)(impulse, np.random.default_rng(6))
    before = SpeechAugment(reverb=1)(quiet, np.random.default_rng(6))   # the same room without the frame
    assert np.all(tail >= impulse - 1e-5) and np.array_equal(tail[:10], before[:10])   # causal
    level = tail[11:40, 0]
    assert np.all(np.diff(level[level > FLOOR]) < 0)                # an exponential decay after the frame


def test_resample_frames_keeps_centres_and_masks():
    x = np.arange(8, dtype=np.float64)[:, None]
    assert np.allclose(resample_frames(x, 4)[:, 0], [0.5, 2.5, 4.5, 6.5])
    assert resample_frames(x, 8) is x
    mask = np.array([True] * 6 + [False] * 2)
    assert resample_frames(mask, 4).tolist() == [True, True, True, False]
    assert resample_frames(np.arange(6, dtype=np.int16), 3).dtype == np.int16
