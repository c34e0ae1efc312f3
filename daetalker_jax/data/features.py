"""Speech features stored with the prepared data: 80-bin log-mel at 100 Hz, 4 mel frames per video frame."""

from __future__ import annotations

import numpy as np

from daetalker_jax.media import FPS, SAMPLE_RATE

N_MELS, HOP, WIN, N_FFT = 80, 160, 400, 512
MELS_PER_FRAME = SAMPLE_RATE // HOP // FPS   # 4


def log_mel(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """(4 * n_frames, 80) float32: mel frame j is centred at j * 10 ms, so video frame k (shown for
    [k * 40, (k + 1) * 40) ms) owns mel frames 4k .. 4k + 3."""
    import librosa   # imported here: its first import takes seconds and most callers never need it

    mel = librosa.feature.melspectrogram(y=audio.astype(np.float32), sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                                         win_length=WIN, n_mels=N_MELS, fmin=20, fmax=SAMPLE_RATE // 2, center=True)
    mel = np.log(np.maximum(mel, 1e-5)).T
    want = MELS_PER_FRAME * n_frames
    if len(mel) < want:
        mel = np.pad(mel, ((0, want - len(mel)), (0, 0)), mode="edge")
    return mel[:want].astype(np.float32)
