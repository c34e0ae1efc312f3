"""Audio-visual sync experts and the LSE-D / LSE-C scores (Lip Sync Error, Prajwal et al. 2020 on SyncNet,
Chung & Zisserman 2016).

Two models:
  SyncNet    our expert, trained on the prepared corpus (trainers/sync.py). In the spirit of the official
             `syncnet_v2` (joonson/syncnet_python, SyncNetModel.py): two conv towers, each ending in a conv
             that covers its whole remaining feature map (-> 1x1) and an FC 2-layer head. Sized for our inputs:
               video: 5 consecutive grayscale mouth crops (the lower half of the face crop, resized to
                      `mouth_size`, default 48x96 as SyncNet's 5-frame lower-face input) stacked as 5 channels,
                      scaled to [-1, 1] (official: 5 BGR 224x224 face frames through a 3-D conv, 0-255);
               audio: 0.2 s of our 80-bin log-mel, (20 mel frames, 80 bins, 1 channel), z-normalised per bin
                      with train-split statistics (official: 13 MFCC x 20 frames at 100 Hz);
               tower: 3x3 conv + GroupNorm + ReLU, then 3x3 stride-2 convs (each axis halved while > 5),
                      then the full-extent conv to `hidden` + ReLU, unnormalised (a GroupNorm over a 1x1 map
                      with small groups would zero it) (official: 5 convs with max-pools, BatchNorm everywhere;
                      we use GroupNorm, which has no train/eval difference and no batch statistics);
               head:  Linear(hidden, hidden) + ReLU + Linear(hidden, embed_dim) (official: 512-512-1024 with
                      BatchNorm1d), then L2-normalised, so the distance is sqrt(2 - 2 cos) in [0, 2].
             Trained with a SyncNet-style BCE on the cosine similarity (see trainers/sync.py).
  SyncNetV2  the official architecture with its exact layer shapes, NHWC/NDHWC, eval-mode BatchNorm, fed by
             `load_syncnet_weights(path)` from the original `syncnet_v2.model` (a PyTorch state dict), with the
             official preprocessing (`mfcc`, `official_video`) and scoring (`lse_official`) so published LSE
             numbers can be reproduced.

Scoring convention (both): for every 5-frame video window starting at i and every offset o in
-max_offset..max_offset, the distance between the video embedding of window i and the audio embedding of
window i - o; the mean over windows per offset is the curve, LSE-D its minimum, LSE-C its median minus its
minimum, and `offset` its argmin. A positive offset means the video lags the audio by that many frames
(frame i shows the mouth of audio frame i - offset), as in the official `offset = vshift - argmin`.
`lse` averages over the windows whose shifted audio exists; `lse_official` pads the audio embeddings with
zeros as the official `calc_pdist` does (and uses its +1e-6 in the distance) and, like it, scores
min(video, audio) - 5 windows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.data.features import MELS_PER_FRAME, N_MELS
from daetalker_jax.errors import UserError

WINDOW = 5   # video frames per sync window (0.2 s at 25 fps)


class Stat(nnx.Variable):
    """A data statistic: not trained, not averaged by the EMA, saved with the model."""


def mouth_crops(faces: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(n, S, S, 3) uint8 face crops -> (n, h, w) uint8 grayscale (ITU-R 601 luma) of their lower half,
    resized (bilinear, antialiased) to size = (h, w)."""
    from PIL import Image

    faces = np.asarray(faces)
    lower = faces[:, faces.shape[1] // 2:].astype(np.float32)
    gray = np.clip(np.round(lower @ np.array([0.299, 0.587, 0.114], np.float32)), 0, 255).astype(np.uint8)
    h, w = size
    return np.stack([np.asarray(Image.fromarray(g).resize((w, h), Image.BILINEAR)) for g in gray]) if len(gray) \
        else np.zeros((0, h, w), np.uint8)


@dataclass(frozen=True)
class SyncNetConfig:
    mouth_size: tuple[int, int] = (48, 96)
    widths: tuple[int, ...] = (64, 128, 256, 256)   # first conv, then one stride-2 conv per further entry
    hidden: int = 512                                # full-extent conv and FC width (official 512)
    embed_dim: int = 512                             # official 1024


class _Tower(nnx.Module):
    """3x3 conv stack (GroupNorm + ReLU) -> full-extent conv to `hidden` -> FC head -> unit embedding."""

    def __init__(self, in_shape: tuple[int, int, int], cfg: SyncNetConfig, *, rngs: nnx.Rngs):
        h, w, cin = in_shape
        self.convs, self.norms = nnx.List(), nnx.List()
        for k, width in enumerate(cfg.widths):
            stride = (1, 1) if k == 0 else (2 if h > 5 else 1, 2 if w > 5 else 1)
            self.convs.append(nnx.Conv(cin, width, (3, 3), strides=stride, padding=1, rngs=rngs))
            self.norms.append(nnx.GroupNorm(width, num_groups=math.gcd(32, width), rngs=rngs))
            h, w, cin = -(-h // stride[0]), -(-w // stride[1]), width
        self.last = nnx.Conv(cin, cfg.hidden, (h, w), padding="VALID", rngs=rngs)
        self.fc1 = nnx.Linear(cfg.hidden, cfg.hidden, rngs=rngs)
        self.fc2 = nnx.Linear(cfg.hidden, cfg.embed_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv, norm in zip(self.convs, self.norms):
            x = jax.nn.relu(norm(conv(x)))
        x = jax.nn.relu(self.last(x)).reshape(x.shape[0], -1)
        x = self.fc2(jax.nn.relu(self.fc1(x)))
        return x / jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True) + 1e-12)


class SyncNet(nnx.Module):
    """Our sync expert: `embed_video` (B, 5, h, w) uint8 mouth crops and `embed_audio` (B, 20, 80) log-mel
    -> (B, embed_dim) unit vectors; `logit(v, a)` = scale * cos + bias for the BCE (SigLIP-style learnt
    calibration; scale starts at 10, bias at -5 so an untrained pair has p ~ 0.5 near cos 0.5)."""

    def __init__(self, cfg: SyncNetConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        h, w = cfg.mouth_size
        self.video = _Tower((h, w, WINDOW), cfg, rngs=rngs)
        self.audio = _Tower((WINDOW * MELS_PER_FRAME, N_MELS, 1), cfg, rngs=rngs)
        self.mel_mean, self.mel_std = Stat(jnp.zeros(N_MELS)), Stat(jnp.ones(N_MELS))
        self.scale, self.bias = nnx.Param(jnp.asarray(10.0)), nnx.Param(jnp.asarray(-5.0))

    def set_stats(self, mel_mean: np.ndarray, mel_std: np.ndarray) -> None:
        self.mel_mean[...] = jnp.asarray(mel_mean, jnp.float32)
        self.mel_std[...] = jnp.asarray(mel_std, jnp.float32)

    def embed_video(self, mouths: jax.Array) -> jax.Array:
        x = jnp.moveaxis(mouths.astype(jnp.float32) / 127.5 - 1.0, 1, -1)   # frames as channels
        return self.video(x)

    def embed_audio(self, mel: jax.Array) -> jax.Array:
        return self.audio(((mel - self.mel_mean[...]) / self.mel_std[...])[..., None])

    def logit(self, v: jax.Array, a: jax.Array) -> jax.Array:
        return self.scale[...] * jnp.sum(v * a, axis=-1) + self.bias[...]


def windows(x: np.ndarray, per_frame: int, count: int) -> np.ndarray:
    """The `count` sliding 5-frame windows of per-frame rows: (count, 5 * per_frame, ...)."""
    idx = np.arange(count)[:, None] * per_frame + np.arange(WINDOW * per_frame)[None]
    return np.asarray(x)[idx]


def _embed_all(fn, x: np.ndarray, batch: int) -> np.ndarray:
    out = []
    for s in range(0, len(x), batch):
        chunk = x[s:s + batch]
        pad = batch - len(chunk)   # one shape per call: compiled once
        out.append(np.asarray(fn(np.pad(chunk, [(0, pad)] + [(0, 0)] * (chunk.ndim - 1))))[:len(chunk)])
    return np.concatenate(out)


def offset_curve(video_emb: np.ndarray, audio_emb: np.ndarray, max_offset: int = 15, zero_pad: bool = False,
                 eps: float = 0.0) -> np.ndarray:
    """Mean over video windows i of ||v_i - a_(i - o) + eps|| for o = -max_offset..max_offset. zero_pad:
    missing audio windows count as zero vectors (official); else they are left out of the mean."""
    n, m = len(video_emb), len(audio_emb)
    curve = np.zeros(2 * max_offset + 1)
    for k, o in enumerate(range(-max_offset, max_offset + 1)):
        j = np.arange(n) - o
        valid = (j >= 0) & (j < m)
        a = np.where(valid[:, None], audio_emb[np.clip(j, 0, max(m - 1, 0))], 0.0)
        d = np.sqrt(np.sum((video_emb - a + eps) ** 2, axis=-1))
        curve[k] = d.mean() if zero_pad else (d[valid].mean() if valid.any() else np.inf)
    return curve


def scores(curve: np.ndarray, max_offset: int) -> dict:
    """LSE-D, LSE-C and the offset (video lag in frames) of an offset curve, plus the curve itself."""
    k = int(np.argmin(curve))
    finite = curve[np.isfinite(curve)]
    return {"lse_d": float(curve[k]), "lse_c": float(np.median(finite) - curve[k]), "offset": k - max_offset,
            "distances": curve}


def embed_clip(model: SyncNet, mouth_frames: np.ndarray, mel: np.ndarray, batch: int = 64
               ) -> tuple[np.ndarray, np.ndarray]:
    """(video, audio) embeddings of every 5-frame window of a clip: mouth_frames (n, h, w) uint8
    (`mouth_crops`), mel (4 n', 80) log-mel -> two (min(n, n') - 4, embed_dim) arrays."""
    n = min(len(mouth_frames), len(mel) // MELS_PER_FRAME) - WINDOW + 1
    if n < 1:
        raise UserError(f"a clip needs at least {WINDOW} frames of video and audio for LSE")
    graphdef, state = nnx.split(model)
    video = jax.jit(lambda s, x: nnx.merge(graphdef, s).embed_video(x))
    audio = jax.jit(lambda s, x: nnx.merge(graphdef, s).embed_audio(x))
    v = _embed_all(lambda x: video(state, x), windows(mouth_frames, 1, n), batch)
    a = _embed_all(lambda x: audio(state, x), windows(np.asarray(mel, np.float32), MELS_PER_FRAME, n), batch)
    return v, a


def lse(model: SyncNet, mouth_frames: np.ndarray, mel: np.ndarray, max_offset: int = 15, batch: int = 64) -> dict:
    """LSE of a clip with our expert (inputs as `embed_clip`). Returns {"lse_d", "lse_c", "offset" (video
    lag, frames), "distances" (mean distance per offset -max_offset..max_offset)}."""
    v, a = embed_clip(model, mouth_frames, mel, batch)
    return scores(offset_curve(v, a, max_offset), max_offset)


# ---------------------------------------------------------------------------------------------------------
# The official syncnet_v2 (joonson/syncnet_python SyncNetModel.S), for the published LSE protocol.

# (kind, torch Sequential index, in, out, kernel, stride, padding); pools: ("pool", index, kernel, stride, pad)
AUDIO_LAYERS = (
    ("conv", 0, 1, 64, (3, 3), (1, 1), (1, 1)), ("pool", 3, (1, 1), (1, 1), (0, 0)),
    ("conv", 4, 64, 192, (3, 3), (1, 1), (1, 1)), ("pool", 7, (3, 3), (1, 2), (0, 0)),
    ("conv", 8, 192, 384, (3, 3), (1, 1), (1, 1)),
    ("conv", 11, 384, 256, (3, 3), (1, 1), (1, 1)),
    ("conv", 14, 256, 256, (3, 3), (1, 1), (1, 1)), ("pool", 17, (3, 3), (2, 2), (0, 0)),
    ("conv", 18, 256, 512, (5, 4), (1, 1), (0, 0)),
)
LIP_LAYERS = (
    ("conv", 0, 3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)), ("pool", 3, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 4, 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), ("pool", 7, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 8, 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 11, 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
    ("conv", 14, 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ("pool", 17, (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 18, 256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),
)
N_MFCC, MFCC_FRAMES, OFFICIAL_SIZE, OFFICIAL_EMBED = 13, 20, 224, 1024


class _OfficialCNN(nnx.Module):
    """conv -> BatchNorm (running statistics, eps 1e-5) -> ReLU, with the max-pools, channels last."""

    def __init__(self, layers: tuple, *, rngs: nnx.Rngs):
        self.layers = layers
        self.convs, self.norms = nnx.List(), nnx.List()
        for spec in layers:
            if spec[0] == "conv":
                _, _, cin, cout, kernel, stride, pad = spec
                self.convs.append(nnx.Conv(cin, cout, kernel, strides=stride, padding=[(p, p) for p in pad],
                                           rngs=rngs))
                self.norms.append(nnx.BatchNorm(cout, use_running_average=True, epsilon=1e-5, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        k = 0
        for spec in self.layers:
            if spec[0] == "conv":
                x = jax.nn.relu(self.norms[k](self.convs[k](x)))
                k += 1
            else:
                _, _, kernel, stride, pad = spec
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *kernel, 1), (1, *stride, 1),
                                          [(0, 0), *[(p, p) for p in pad], (0, 0)])
        return x.reshape(x.shape[0], -1)


class _OfficialFC(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(512, 512, rngs=rngs)
        self.norm = nnx.BatchNorm(512, use_running_average=True, epsilon=1e-5, rngs=rngs)
        self.fc2 = nnx.Linear(512, OFFICIAL_EMBED, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.relu(self.norm(self.fc1(x))))


class SyncNetV2(nnx.Module):
    """The official syncnet_v2 in eval mode: `embed_audio` (B, 13, 20) MFCC (coefficients x 100 Hz frames)
    and `embed_video` (B, 5, 224, 224, 3) BGR 0-255 frames -> (B, 1024) unnormalised embeddings."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.netcnnaud, self.netfcaud = _OfficialCNN(AUDIO_LAYERS, rngs=rngs), _OfficialFC(rngs=rngs)
        self.netcnnlip, self.netfclip = _OfficialCNN(LIP_LAYERS, rngs=rngs), _OfficialFC(rngs=rngs)

    def embed_audio(self, mfcc: jax.Array) -> jax.Array:
        return self.netfcaud(self.netcnnaud(mfcc[..., None]))

    def embed_video(self, frames: jax.Array) -> jax.Array:
        return self.netfclip(self.netcnnlip(frames.astype(jnp.float32)))


def _official_keys(model: SyncNetV2):
    """(torch key, NNX variable, torch -> ours transpose or None) for every entry of the official state dict."""
    for tower in ("aud", "lip"):
        cnn, fc = getattr(model, f"netcnn{tower}"), getattr(model, f"netfc{tower}")
        convs = [s for s in cnn.layers if s[0] == "conv"]
        for spec, conv, norm in zip(convs, cnn.convs, cnn.norms):
            i = spec[1]
            nd = len(spec[4])
            yield f"netcnn{tower}.{i}.weight", conv.kernel, (*range(2, 2 + nd), 1, 0)
            yield f"netcnn{tower}.{i}.bias", conv.bias, None
            yield from _bn_keys(f"netcnn{tower}.{i + 1}", norm)
        yield f"netfc{tower}.0.weight", fc.fc1.kernel, (1, 0)
        yield f"netfc{tower}.0.bias", fc.fc1.bias, None
        yield from _bn_keys(f"netfc{tower}.1", fc.norm)
        yield f"netfc{tower}.3.weight", fc.fc2.kernel, (1, 0)
        yield f"netfc{tower}.3.bias", fc.fc2.bias, None


def _bn_keys(prefix: str, norm: nnx.BatchNorm):
    yield f"{prefix}.weight", norm.scale, None
    yield f"{prefix}.bias", norm.bias, None
    yield f"{prefix}.running_mean", norm.mean, None
    yield f"{prefix}.running_var", norm.var, None


def official_state_dict(model: SyncNetV2) -> dict[str, np.ndarray]:
    """Our SyncNetV2 as the official state dict layout (torch key names and shapes), as numpy arrays."""
    out = {}
    for key, var, perm in _official_keys(model):
        value = np.asarray(var[...])
        out[key] = value if perm is None else np.transpose(value, np.argsort(perm))
    return out


def syncnet_from_state_dict(state: Mapping[str, np.ndarray]) -> SyncNetV2:
    """A SyncNetV2 holding the official state dict's weights (numpy or torch tensors); `num_batches_tracked`
    entries are ignored. Raises UserError naming the first missing, unexpected or misshapen entry."""
    model = SyncNetV2(rngs=nnx.Rngs(0))
    state = {k.removeprefix("__S__."): v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    expected = set()
    for key, var, perm in _official_keys(model):
        expected.add(key)
        if key not in state:
            raise UserError(f"the SyncNet weights lack {key!r}: not a syncnet_v2.model state dict")
        value = state[key]
        value = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)
        value = value if perm is None else np.transpose(value, perm)
        if value.shape != var[...].shape:
            raise UserError(f"SyncNet weight {key!r} has shape {value.shape} after conversion, expected "
                            f"{var[...].shape}: not the syncnet_v2 architecture")
        var[...] = jnp.asarray(value)
    extra = sorted(set(state) - expected)
    if extra:
        raise UserError(f"the SyncNet weights hold entries syncnet_v2 does not have, e.g. {extra[0]!r}")
    return model


def load_syncnet_weights(path: str) -> SyncNetV2:
    """The official `syncnet_v2.model` (PyTorch-pickled state dict, joonson/syncnet_python) as a SyncNetV2.
    Needs torch (imported here only); raises UserError if it is missing or the file does not match."""
    try:
        import torch
    except ImportError:
        raise UserError("reading the official syncnet_v2.model needs PyTorch: `pip install torch` (CPU is enough), "
                        "or convert it elsewhere with official_state_dict/syncnet_from_state_dict") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"no SyncNet weights at {path}; download syncnet_v2.model (joonson/syncnet_python "
                        "download_model.sh)") from None
    except Exception as e:   # unpickling errors of every kind: not a state dict file
        raise UserError(f"{path} is not a PyTorch state dict ({type(e).__name__}: {e})") from e
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not the syncnet_v2 state dict")
    return syncnet_from_state_dict(state)


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def mfcc(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """(frames, 13) MFCC exactly as python_speech_features.mfcc with its defaults (as the official
    SyncNetInstance calls it): 25 ms rectangular windows every 10 ms without centring, pre-emphasis 0.97,
    512-point power spectrum, 26 triangular mel filters 0-8 kHz, log, orthonormal DCT-II, lifter 22 and
    c0 replaced by the log frame energy. `audio` in int16 units (the official reads the wav as int16)."""
    from scipy.fft import dct

    x = np.asarray(audio, np.float64)
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    win, step, nfft, nfilt = round(0.025 * sample_rate), round(0.01 * sample_rate), 512, 26
    n = 1 if len(x) <= win else 1 + math.ceil((len(x) - win) / step)
    x = np.concatenate([x, np.zeros((n - 1) * step + win - len(x))])
    frames = x[np.arange(n)[:, None] * step + np.arange(win)[None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    bins = np.floor((nfft + 1) * _mel2hz(np.linspace(_hz2mel(0), _hz2mel(sample_rate / 2), nfilt + 2)) / sample_rate)
    fbank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        a, b, c = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        fbank[j, a:b] = (np.arange(a, b) - bins[j]) / (bins[j + 1] - bins[j])
        fbank[j, b:c] = (bins[j + 2] - np.arange(b, c)) / (bins[j + 2] - bins[j + 1])
    feat = power @ fbank.T
    feat = np.log(np.where(feat == 0, np.finfo(float).eps, feat))
    feat = dct(feat, type=2, axis=1, norm="ortho")[:, :N_MFCC]
    feat *= 1 + 11.0 * np.sin(np.pi * np.arange(N_MFCC) / 22)
    feat[:, 0] = np.log(energy)
    return feat


def official_video(faces_rgb: np.ndarray) -> np.ndarray:
    """(n, S, S, 3) uint8 RGB face crops -> (n, 224, 224, 3) float32 BGR 0-255, the official network input
    (the official pipeline writes 224x224 face-track videos, read back with OpenCV)."""
    from PIL import Image

    out = [np.asarray(Image.fromarray(f).resize((OFFICIAL_SIZE, OFFICIAL_SIZE), Image.BILINEAR)) for f in faces_rgb]
    return np.stack(out)[..., ::-1].astype(np.float32)


def lse_official(model: SyncNetV2, faces_rgb: np.ndarray, audio_int16: np.ndarray, max_offset: int = 15,
                 batch: int = 20) -> dict:
    """LSE with the official weights and protocol (SyncNetInstance.evaluate): MFCC of the 16 kHz audio,
    224x224 BGR frames, min(video, audio) - 5 windows, zero-padded audio embeddings, distance
    ||v - a + 1e-6||. Wav2Lip's LSE uses max_offset (vshift) 15. Not reproduced here: the official face
    detection and tracking (S3FD, run_pipeline.py) that makes the 224x224 crops; we use our own crops."""
    cc = mfcc(audio_int16)
    n = min(len(faces_rgb), len(audio_int16) // 640) - WINDOW
    if n < 1:
        raise UserError(f"a clip needs more than {WINDOW} frames of video and audio for LSE")
    graphdef, state = nnx.split(model)
    video = jax.jit(lambda s, x: nnx.merge(graphdef, s).embed_video(x))
    audio = jax.jit(lambda s, x: nnx.merge(graphdef, s).embed_audio(x))
    frames = official_video(faces_rgb[:n + WINDOW - 1])
    v = _embed_all(lambda x: video(state, x), windows(frames, 1, n), batch)
    a = _embed_all(lambda x: audio(state, x), np.swapaxes(windows(cc, MELS_PER_FRAME, n), 1, 2), batch)
    return scores(offset_curve(v, a, max_offset, zero_pad=True, eps=1e-6), max_offset)
