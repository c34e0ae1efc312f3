"""Speech for the corpus: espeak-ng text-to-speech (real TTS, several voices, speeds and pitches)."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from functools import lru_cache

import numpy as np

from daetalker_jax.errors import UserError
from daetalker_jax.media import SAMPLE_RATE, resample

# Training voices, and the voice held out for the test split (never heard in training).
TRAIN_VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-029", "en-gb-x-rp+f2")
HELD_OUT_VOICES = ("en-gb-x-gbcwmd+f4",)
SPEEDS = (140, 155, 170)     # words per minute
PITCHES = (35, 50, 65)       # espeak-ng pitch 0..99


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise UserError("espeak-ng is not installed; install it with `sudo apt-get install -y espeak-ng` "
                        "(the README's set-up command does this)")
    return path


@lru_cache(maxsize=None)
def check_voice(voice: str) -> None:
    """Raises UserError unless espeak-ng can speak with `voice` (a name, optionally with +variant)."""
    result = subprocess.run([espeak_binary(), "-v", voice, "-q", "test"], capture_output=True, text=True)
    if result.returncode != 0 or "does not exist" in result.stderr:
        listing = subprocess.run([espeak_binary(), "--voices=en"], capture_output=True, text=True).stdout
        names = sorted({line.split()[1] for line in listing.splitlines()[1:] if len(line.split()) > 1})
        raise UserError(f"unknown espeak-ng voice {voice!r}; English voices here: {', '.join(names)} "
                        "(a variant can be added as e.g. en-us+f3)")


def synthesize(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """Speaks `text` and returns mono float32 audio at 16 kHz, leading/trailing silence trimmed to
    0.2 s so clips start and end with a short closed-mouth pause."""
    check_voice(voice)
    result = subprocess.run([espeak_binary(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                            capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        raise UserError(f"espeak-ng failed for voice {voice!r}: {result.stderr.decode(errors='replace').strip()}")
    with wave.open(io.BytesIO(result.stdout)) as w:
        sr = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    audio = resample(pcm.astype(np.float32) / 32768.0, sr, SAMPLE_RATE)
    return trim_silence(audio)


def trim_silence(audio: np.ndarray, keep_s: float = 0.2, threshold: float = 0.01) -> np.ndarray:
    loud = np.nonzero(np.abs(audio) > threshold)[0]
    if len(loud) == 0:
        return audio
    keep = int(keep_s * SAMPLE_RATE)
    start, stop = max(0, loud[0] - keep), min(len(audio), loud[-1] + keep)
    return np.pad(audio[start:stop], (max(0, keep - loud[0]), max(0, loud[-1] + keep - len(audio))))
