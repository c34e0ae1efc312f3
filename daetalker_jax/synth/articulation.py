"""Audio -> per-frame mouth track: a documented, deterministic function of the acoustics alone.

Because it needs only the waveform, the ground-truth mouth track exists for ANY speech recording,
which is what later lets us score lip sync of generated video against the driving audio.

Per 10 ms hop (25 ms Hann window, 16 kHz):
  loudness  l = clip((dB - (max(peak_dB, -40) - 45)) / 35, 0, 1), and 0 below -60 dBFS; peak_dB is
            the 98th percentile of the clip's hop levels, so silence and breath noise give l = 0;
  openness  o = E(300-1000 Hz) / E(80-4000 Hz)       (first-formant energy: open vowels are high);
  voicing   v = E(80-1000 Hz) / E(80-8000 Hz)        (fricatives and bursts are low);
  F2 proxy  f = spectral centroid within 800-3000 Hz.
Mouth parameters (all in [0, 1]):
  jaw      = l * (0.3 + 0.7 * clip((o - 0.15) / 0.45, 0, 1)) * (0.4 + 0.6 * v)
  rounding = l * v * clip((1900 - f) / 800, 0, 1)     (low F2: /u/, /o/, /w/)
  width    = 0.5 + 0.5 * l * v * clip((f - 1500) / 700, 0, 1)   (high F2: /i/, /e/ spread the lips)
  closure  = short pauses inside speech (< 250 ms, l < 0.15): the lips press together (/p b m/)
  opening  = jaw * (1 - closure)                        (what the renderer draws)
Coarticulation: every track is smoothed with a zero-phase Gaussian (sigma 30 ms). Anticipation: the
track at time t is read from the acoustics at t + LEAD_MS, so the mouth moves 60 ms before the
sound. Frames (25 fps) sample the 100 Hz track at their centres (k * 40 ms + 20 ms).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_closing, gaussian_filter1d

from daetalker_jax.media import FPS, SAMPLE_RATE

HOP, WIN = 160, 400          # 10 ms hop, 25 ms window at 16 kHz
LEAD_MS = 60                 # the mouth leads the sound by this much
SMOOTH_MS = 30
TRACKS = ("opening", "jaw", "width", "rounding", "closure")


def _band(spec: np.ndarray, freqs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return spec[:, (freqs >= lo) & (freqs < hi)].sum(1) + 1e-10


def loudness(audio: np.ndarray) -> np.ndarray:
    """Per-hop loudness in [0, 1] (see the module docstring), 100 Hz."""
    return _features(audio)[0]


def _features(audio: np.ndarray) -> tuple[np.ndarray, ...]:
    pad = np.pad(audio.astype(np.float64), (WIN // 2, WIN // 2))
    n = 1 + (len(pad) - WIN) // HOP
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(pad[idx] * np.hanning(WIN), axis=1)) ** 2
    freqs = np.fft.rfftfreq(WIN, 1 / SAMPLE_RATE)
    total = _band(spec, freqs, 80, 8000)
    db = 10 * np.log10(total / (WIN * np.sum(np.hanning(WIN) ** 2) / 2))
    peak = max(float(np.percentile(db, 98)), -40.0)
    loud = np.clip((db - (peak - 45)) / 35, 0, 1) * (db > -60)
    low = _band(spec, freqs, 80, 4000)
    openness = _band(spec, freqs, 300, 1000) / low
    voicing = _band(spec, freqs, 80, 1000) / total
    sel = (freqs >= 800) & (freqs < 3000)
    f2 = (spec[:, sel] * freqs[sel]).sum(1) / (spec[:, sel].sum(1) + 1e-10)
    return loud, openness, voicing, f2


def mouth_track_100hz(audio: np.ndarray) -> dict[str, np.ndarray]:
    """The mouth parameters at 100 Hz (hop j describes time j * 10 ms), smoothed and led."""
    loud, openness, voicing, f2 = _features(audio)
    jaw = loud * (0.3 + 0.7 * np.clip((openness - 0.15) / 0.45, 0, 1)) * (0.4 + 0.6 * voicing)
    rounding = loud * voicing * np.clip((1900 - f2) / 800, 0, 1)
    width = 0.5 + 0.5 * loud * voicing * np.clip((f2 - 1500) / 700, 0, 1)
    quiet = loud < 0.15
    speech = binary_closing(~quiet, structure=np.ones(25))      # bridges pauses under 250 ms
    closure = (speech & quiet).astype(np.float64)
    lead = LEAD_MS * SAMPLE_RATE // 1000 // HOP
    out = {}
    for name, x in (("jaw", jaw), ("width", width), ("rounding", rounding), ("closure", closure)):
        x = gaussian_filter1d(x, SMOOTH_MS / 10, mode="nearest")
        out[name] = np.concatenate([x[lead:], np.full(lead, x[-1])])   # read the future: anticipation
    out["opening"] = out["jaw"] * (1 - out["closure"])
    return out


def n_frames(num_samples: int) -> int:
    """Video frames covering an utterance of `num_samples` at 16 kHz (rounded to the nearest frame)."""
    return max(1, int(round(num_samples * FPS / SAMPLE_RATE)))


def mouth_track(audio: np.ndarray) -> dict[str, np.ndarray]:
    """The mouth parameters per 25 fps video frame, each an array of n_frames(len(audio))."""
    track = mouth_track_100hz(audio)
    t = (np.arange(n_frames(len(audio))) + 0.5) / FPS * 100      # frame centres in hops
    hops = np.arange(len(track["jaw"]))
    return {k: np.clip(np.interp(t, hops, v), 0, 1).astype(np.float32) for k, v in track.items()}
