"""Speech augmentation for speech2latent training: how people record, applied to log-mel training windows.

The mouth ground truth (and so the latent targets) belongs to the clean speech; augmentation changes only
what the model hears. Each operation works on the window's mel power spectrum P = exp(log-mel), where it is
exact or is the expectation of its waveform version, so it costs ~0.1 ms per window on one core instead of
an STFT per window:

  gain       loudness: P * 10^(g/10), g uniform in +-gain_db                              (exact)
  noise      white, pink or brown noise at an SNR of 0-30 dB to the speech frames:          (expected power)
             P + N, the noise's mel power drawn per bin and frame from its periodogram's
             exponential distribution, with a slow level drift
  reverb     late reverberation, RT60 0.2-1.0 s: a decaying power tail added along time    (expected power)
             (direct-to-reverberant ratio 0-10 dB)
  telephone  a 300-3400 Hz band (4th-order Butterworth magnitudes; nothing is left above    (exact per bin)
             4 kHz, as after 8 kHz resampling)
  vtlp       vocal tract length perturbation, frequencies scaled by 0.9-1.1 (Jaitly & Hinton 2013's
             piecewise-linear warp), read by interpolation along the bins
  speed      speed perturbation 0.9-1.1 (Ko et al. 2015: resampled audio, so tempo and pitch change
             together): frequencies scaled by the factor, and the window, its targets, pose and mask resampled
             in time to the same number of frames, so the mouth still matches what is heard

Every probability is per window; a window gets any combination. Codec round trips (mp3/aac) need the
waveform and are not done here: every prepared clip has already been through AAC once (the corpus' mp4)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.signal import lfilter

from daetalker_jax.data.features import HOP, N_FFT, N_MELS
from daetalker_jax.media import SAMPLE_RATE

FLOOR = np.log(1e-5)          # the log-mel floor of `features.log_mel`
FRAME_S = HOP / SAMPLE_RATE   # 10 ms
SNR_DB = (0.0, 30.0)
RT60_S = (0.2, 1.0)
DRR_DB = (0.0, 10.0)
WARP = (0.9, 1.1)
SPEED = (0.9, 1.1)
TELEPHONE_HZ = (300.0, 3400.0)


@dataclass(frozen=True)
class SpeechAugment:
    """gain_db: half-range of the random gain (0: off); the rest: the probability of each operation."""
    gain_db: float = 0.0
    noise: float = 0.0
    reverb: float = 0.0
    telephone: float = 0.0
    vtlp: float = 0.0
    speed: float = 0.0

    @classmethod
    def from_config(cls, config) -> SpeechAugment:
        return cls(**{k: float(v) for k, v in dict(config).items()})

    @property
    def active(self) -> bool:
        return any(v > 0 for v in (self.gain_db, self.noise, self.reverb, self.telephone, self.vtlp, self.speed))

    @cached_property
    def _bins(self) -> tuple[np.ndarray, np.ndarray]:
        """Centre frequency of each mel bin, and the mel filterbank (bins x FFT bins)."""
        import librosa

        centres = librosa.mel_frequencies(N_MELS + 2, fmin=20, fmax=SAMPLE_RATE // 2)[1:-1]
        bank = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=20, fmax=SAMPLE_RATE // 2)
        return centres, bank

    def speed_factor(self, rng: np.random.Generator) -> float:
        """The window's speed factor (1: none); drawn first, because it decides how many frames to read."""
        return float(rng.uniform(*SPEED)) if rng.random() < self.speed else 1.0

    def __call__(self, mel: np.ndarray, rng: np.random.Generator, speed: float = 1.0) -> np.ndarray:
        """An augmented copy of a (frames, 80) log-mel window (already resampled in time for `speed`)."""
        centres, _ = self._bins
        gain = rng.uniform(-self.gain_db, self.gain_db) if self.gain_db > 0 else 0.0
        vtlp, reverb, noise, telephone = (rng.random() < p
                                          for p in (self.vtlp, self.reverb, self.noise, self.telephone))
        if speed == 1.0 and not (gain or vtlp or reverb or noise or telephone):
            return mel
        power = np.exp(mel.astype(np.float32))
        if speed != 1.0:          # every frequency scaled: output bin f hears the input at f / speed
            power = self._read_at(power, centres / speed)
        if vtlp:
            power = self._read_at(power, self._vtlp_source(float(rng.uniform(*WARP))))
        if gain:
            power *= np.float32(10 ** (gain / 10))
        if reverb:
            power = self._reverb(power, rng)
        if noise:
            power = power + self._noise(power, rng)
        if telephone:
            power = power * self._telephone()[None]
        return np.maximum(np.log(np.maximum(power, 1e-30)), FLOOR).astype(np.float32)

    def _read_at(self, power: np.ndarray, source: np.ndarray) -> np.ndarray:
        """Each bin's power read from the spectrum at frequency `source` (interpolated in log power between
        bin centres; above the top bin there is nothing, as after a downward resampling)."""
        centres, _ = self._bins
        hi = np.clip(np.searchsorted(centres, source), 1, len(centres) - 1)
        w = np.clip((source - centres[hi - 1]) / (centres[hi] - centres[hi - 1]), 0, 1)
        log_power = np.log(np.maximum(power, 1e-30))
        out = np.exp(log_power[:, hi - 1] * (1 - w) + log_power[:, hi] * w)
        return np.where(source > centres[-1] * 1.02, 0.0, out).astype(np.float32)

    def _vtlp_source(self, alpha: float) -> np.ndarray:
        """VTLP's piecewise-linear warp (Jaitly & Hinton 2013), inverted: the input frequency each output bin
        reads. f -> alpha f up to a knee at 0.8 x Nyquist x min(alpha, 1), then linear to the Nyquist frequency."""
        centres, _ = self._bins
        nyquist = SAMPLE_RATE / 2
        knee = 0.8 * nyquist * min(alpha, 1.0)
        return np.where(centres <= knee, centres / alpha,
                        knee / alpha + (centres - knee) * (nyquist - knee / alpha) / (nyquist - knee))

    def _noise(self, power: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        centres, bank = self._bins
        freqs = np.maximum(np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE), 20.0)
        shape = bank @ freqs ** -float(rng.choice([0.0, 1.0, 2.0]))   # white, pink, brown: mean mel power per bin
        speech = power.sum(1)
        level = np.mean(speech[speech >= np.median(speech)])             # the louder half: where the speech is
        snr = 10 ** (rng.uniform(*SNR_DB) / 10)
        drift = np.exp(np.cumsum(rng.normal(0, 0.02, len(power))))      # slow level changes
        scale = (level / snr / shape.sum()) * shape[None] * drift[:, None]
        return (scale * rng.standard_exponential(power.shape, dtype=np.float32)).astype(np.float32)

    def _reverb(self, power: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Direct sound plus an exponentially decaying power tail (one-pole filter along time)."""
        decay = np.exp(-np.log(1e6) * FRAME_S / rng.uniform(*RT60_S))    # -60 dB after RT60
        drr = 10 ** (rng.uniform(*DRR_DB) / 10)
        tail = lfilter([0.0, 1.0 - decay], [1.0, -decay], power, axis=0)   # unit gain overall, one frame late
        return (power + tail / drr).astype(np.float32)

    def _telephone(self) -> np.ndarray:
        centres, _ = self._bins
        lo, hi = TELEPHONE_HZ
        response = 1 / (1 + (lo / centres) ** 8) / (1 + (centres / hi) ** 8)   # |H|^2 of 4th-order high + low pass
        return np.where(centres < SAMPLE_RATE / 4, response, 0.0).astype(np.float32)


def resample_frames(x: np.ndarray, frames: int) -> np.ndarray:
    """Rows of x linearly resampled to `frames` rows spanning the same time (row centres kept aligned)."""
    n = len(x)
    if n == frames:
        return x
    t = (np.arange(frames) + 0.5) * n / frames - 0.5
    lo = np.clip(np.floor(t).astype(int), 0, n - 1)
    hi = np.minimum(lo + 1, n - 1)
    w = np.clip(t - lo, 0, 1).reshape(-1, *([1] * (x.ndim - 1)))
    out = x[lo].astype(np.float64) * (1 - w) + x[hi].astype(np.float64) * w
    return out.astype(x.dtype) if x.dtype != bool else out >= 0.5
