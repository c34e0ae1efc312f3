"""`Talker`: speech -> talking-head video with a trained DiffAE and speech2latent (DAE-Talker inference).

  audio (16 kHz) -> speech features -> speech2latent, window by window -> one latent per 25 fps frame
  -> DDIM decoding of all frames from ONE shared x_T (DAE-Talker's continuity trick) -> frames.

Memory stays bounded for any length: speech2latent runs on windows (`chunk` frames emitted, with `left`
frames of past and `right` frames of future context; all windows the same padded length, so it compiles
once), and frames are decoded in fixed batches sharded over all devices. The same windows serve the
streaming mode, where `right` is the look-ahead. Used by the CLI (generate.py), the notebook and the web UI.
"""

from __future__ import annotations

import math
import time
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from daetalker_jax.data.features import log_mel
from daetalker_jax.data.pipeline import SAMPLES_PER_FRAME
from daetalker_jax.diffusion import ddim
from daetalker_jax.diffusion.schedule import Schedule, check_steps
from daetalker_jax.errors import UserError, ensure_writable_dir
from daetalker_jax.generation.pose import fit_length
from daetalker_jax.media import FPS, SAMPLE_RATE, load_audio, resized, write_mp4
from daetalker_jax.trainers.base import load_trained, make_mesh
from daetalker_jax.trainers.dae import to_unit_range

Trained = tuple[ml_collections.ConfigDict, nnx.Module]
SILENCE_PEAK = 1e-3   # -60 dBFS
MAX_PEAK = 8.0        # float audio overshoots 1 a little after resampling or mixing; int16 PCM as float goes to 32767


@dataclass(frozen=True)
class Windows:
    """speech2latent windows in video frames: each emits `chunk` frames seeing `left` past and `right`
    future frames of context."""
    chunk: int
    left: int
    right: int


OFFLINE = Windows(chunk=500, left=100, right=100)     # 20 s emitted with 4 s of context on each side
STREAMING = Windows(chunk=12, left=100, right=13)     # 0.48 s emitted, 4 s of past, 0.52 s look-ahead


def check_speech(audio: np.ndarray, name: str = "the speech") -> np.ndarray:
    audio = np.asarray(audio, np.float32).reshape(-1)
    if audio.size < SAMPLES_PER_FRAME:
        raise UserError(f"{name} is {audio.size / SAMPLE_RATE * 1000:.0f} ms long, shorter than one video frame "
                        f"(40 ms); give at least 0.1 s of speech")
    if not np.all(np.isfinite(audio)):
        raise UserError(f"{name} contains NaN/Inf samples")
    if np.abs(audio).max() > MAX_PEAK:
        raise UserError(f"{name} peaks at {np.abs(audio).max():.0f}, far outside the [-1, 1] of float audio: it looks "
                        "like integer PCM; divide int16 samples by 32768 (or read the file with load_audio)")
    if np.abs(audio).max() < SILENCE_PEAK:
        raise UserError(f"{name} is silent (peak below -60 dBFS); give a recording with speech in it")
    return audio


class Talker:
    def __init__(self, dae: str | Path | Trained, s2l: str | Path | Trained | None, *, steps: int = 20,
                 batch_frames: int = 64):
        """dae, s2l: training run folders, or (config, model) pairs already in memory. s2l None: the DiffAE
        alone (decoding, inversion and reconstruction; no speech)."""
        self.dae_config, dae_model = dae if isinstance(dae, tuple) else load_trained(dae)
        if self.dae_config.task != "dae":
            raise UserError(f"--dae must be a DiffAE run; got a {self.dae_config.task!r} run")
        z_dim, size = int(self.dae_config.model.z_channels), int(self.dae_config.model.image_size)
        self.s2l_config, s2l_model = None, None
        if s2l is not None:
            self.s2l_config, s2l_model = s2l if isinstance(s2l, tuple) else load_trained(s2l)
            self._check_pair(dae, s2l, z_dim, size)
        self.schedule = Schedule.of(self.dae_config)
        self.image_size, self.steps = size, check_steps(steps, self.schedule.num_timesteps)
        self.mesh = make_mesh()
        self.batch_frames = -(-batch_frames // self.mesh.size) * self.mesh.size
        self.speech_encoder = None
        if s2l is not None and self.s2l_config.features == "speech":
            from daetalker_jax.models.wav2vec2 import load_encoder

            if not Path(self.s2l_config.speech_model).exists():
                raise UserError(f"speech2latent {s2l} needs the speech model {self.s2l_config.speech_model}, which "
                                "is not there; copy it back to that path")
            self.speech_encoder = load_encoder(self.s2l_config.speech_model)
        replicated = NamedSharding(self.mesh, PartitionSpec())
        self._dae_def, self._dae_state = nnx.split(dae_model)
        self._s2l_def, self._s2l_state = nnx.split(s2l_model) if s2l is not None else (None, None)
        self._dae_state, self._s2l_state = jax.device_put((self._dae_state, self._s2l_state), replicated)
        self._frames_sharding = NamedSharding(self.mesh, PartitionSpec("data"))
        self._s2l_fn = jax.jit(self._s2l_window, static_argnums=3)
        self._decode_fn = jax.jit(self._decode)
        self._invert_fn = jax.jit(self._invert)
        self._reconstruct_fn = jax.jit(self._reconstruct, static_argnums=2)

    def _check_pair(self, dae, s2l, z_dim: int, size: int) -> None:
        if self.s2l_config.task != "s2l":
            raise UserError(f"--s2l must be a speech2latent run; got a {self.s2l_config.task!r} run")
        if int(self.s2l_config.latent_dim) != z_dim:
            raise UserError(f"the checkpoints do not belong together: speech2latent {s2l} predicts "
                            f"{self.s2l_config.latent_dim}-d latents but the DiffAE {dae} uses {z_dim}-d ones; "
                            f"use the DiffAE whose latents it was trained on ({self.s2l_config.dae})")
        if self.s2l_config.image_size and int(self.s2l_config.image_size) != size:
            raise UserError(f"the checkpoints do not belong together: speech2latent {s2l} was trained on latents of "
                            f"a {self.s2l_config.image_size}px DiffAE, but {dae} is {size}px; use "
                            f"{self.s2l_config.dae}")

    # --- speech -> latents -------------------------------------------------------------------------------
    def features(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        """Speech features of n_frames video frames of 16 kHz audio: (4 n, 80) log-mel or (2 n, L, D)."""
        audio = np.pad(audio, (0, max(0, n_frames * SAMPLES_PER_FRAME - len(audio))))[:n_frames * SAMPLES_PER_FRAME]
        if self.speech_encoder is None:
            return log_mel(audio, n_frames)
        from daetalker_jax.models.wav2vec2 import features_for_frames

        cfg, encoder = self.speech_encoder
        return features_for_frames(encoder, cfg, audio, n_frames)

    def _s2l_window(self, state, feats, mask, has_pose: bool, pose):
        model = nnx.merge(self._s2l_def, state)
        return model.predict(feats, mask, pose if has_pose else None)

    def _window(self, audio: np.ndarray, offset: int, a: int, b: int, n: int, win: Windows,
                pose: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Latents and pose of frames [a, b); `audio` starts at frame `offset` and the clip has n frames."""
        if self._s2l_state is None:
            raise UserError("this Talker has the DiffAE alone; give it a speech2latent run to turn speech into latents")
        s, e = max(0, a - win.left), min(n, b + win.right)
        total = win.chunk + win.left + win.right
        segment = audio[(s - offset) * SAMPLES_PER_FRAME:(e - offset) * SAMPLES_PER_FRAME]
        feats = self.features(segment, e - s)
        per = len(feats) // (e - s)
        feats = np.pad(feats, [(0, per * (total - (e - s)))] + [(0, 0)] * (feats.ndim - 1))
        mask = np.arange(total) < e - s
        given = np.zeros((total, 3), np.float32) if pose is None else np.pad(pose[s:e], [(0, total - (e - s)), (0, 0)])
        z, used = self._s2l_fn(self._s2l_state, feats[None], mask[None], pose is not None, given[None])
        return np.asarray(z[0, a - s:b - s]), np.asarray(used[0, a - s:b - s])

    def latents(self, audio: np.ndarray, pose: np.ndarray | None = None, win: Windows = OFFLINE
                ) -> tuple[np.ndarray, np.ndarray]:
        """(n, z) latents and the (n, 3) pose in degrees they were made with, n = ceil(len(audio) / 640)."""
        audio = check_speech(audio)
        n = math.ceil(len(audio) / SAMPLES_PER_FRAME)
        pose = None if pose is None else fit_length(pose, n)
        parts = [self._window(audio, 0, a, min(n, a + win.chunk), n, win, pose) for a in range(0, n, win.chunk)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    # --- latents -> frames -------------------------------------------------------------------------------
    def _decode(self, state, z, x_T):
        model = nnx.merge(self._dae_def, state)
        x = ddim.sample(model, jnp.broadcast_to(x_T, (z.shape[0],) + x_T.shape), z, self.schedule, self.steps)
        return jnp.clip((x + 1) * 127.5 + 0.5, 0, 255).astype(jnp.uint8)

    def _invert(self, state, x0):
        model = nnx.merge(self._dae_def, state)
        return ddim.invert(model, x0, model.encode(x0), self.schedule, self.steps)[0]

    def noise(self, seed: int = 0, ref_frame: str | Path | np.ndarray | None = None) -> jax.Array:
        """The shared x_T: Gaussian from `seed`, or the DDIM inversion of a reference frame (its exact
        background and identity)."""
        if ref_frame is None:
            return jax.random.normal(jax.random.key(seed), (self.image_size,) * 2 + (3,))
        image = ref_frame if isinstance(ref_frame, np.ndarray) else _read_image(ref_frame)
        image = _square_resize(image, self.image_size)
        return self._invert_fn(self._dae_state, to_unit_range(jnp.asarray(image))[None])

    def _batches(self, x: np.ndarray) -> Iterator[tuple[jax.Array, int]]:
        """x in fixed batches of batch_frames (the last one zero-padded), sharded over the devices."""
        for a in range(0, len(x), self.batch_frames):
            chunk = x[a:a + self.batch_frames]
            padded = np.pad(chunk, [(0, self.batch_frames - len(chunk))] + [(0, 0)] * (x.ndim - 1))
            yield jax.device_put(padded, self._frames_sharding), len(chunk)

    def frames(self, z: np.ndarray, x_T: jax.Array, progress: tqdm | None = None) -> Iterator[np.ndarray]:
        """Decodes latents batch by batch; yields uint8 frames."""
        for batch, n in self._batches(z):
            for frame in np.asarray(self._decode_fn(self._dae_state, batch, x_T))[:n]:
                if progress is not None:
                    progress.update()
                yield frame

    def _reconstruct(self, state, frames, steps: int):
        model = nnx.merge(self._dae_def, state)
        x0 = to_unit_range(frames)
        z = model.encode(x0)
        x = ddim.sample(model, ddim.invert(model, x0, z, self.schedule, steps), z, self.schedule, steps)
        return z, jnp.clip((x + 1) * 127.5 + 0.5, 0, 255).astype(jnp.uint8)

    def reconstruct(self, frames: np.ndarray, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """DiffAE's autoencoding of real (n, S, S, 3) uint8 frames: their latents (the speech2latent targets)
        and each frame decoded from its latent and its own DDIM-inverted x_T, inverting and decoding in
        `steps` steps (default: the generation's; DiffAE reports this at T = 100, its config's invert_steps)."""
        if frames.shape[1:] != (self.image_size, self.image_size, 3):
            raise UserError(f"frames of shape {frames.shape[1:]} do not fit this {self.image_size}px DiffAE")
        steps = self.steps if steps is None else check_steps(steps, self.schedule.num_timesteps, "--invert-steps")
        zs, outs = [], []
        for batch, n in self._batches(frames):
            z, out = self._reconstruct_fn(self._dae_state, batch, steps)
            zs.append(np.asarray(z)[:n])
            outs.append(np.asarray(out)[:n])
        return np.concatenate(zs), np.concatenate(outs)

    # --- whole files and streams ---------------------------------------------------------------------------
    def generate(self, audio: np.ndarray | str | Path, out: str | Path, *, pose: np.ndarray | None = None,
                 seed: int = 0, ref_frame: str | Path | None = None, progress: bool = True,
                 video_size: int | None = None) -> dict:
        """Writes a 25 fps mp4 with the speech muxed in (frames resized to `video_size` if given); returns a
        summary with the pose used."""
        if not isinstance(audio, np.ndarray):
            audio = load_audio(audio)
        out = Path(out)
        if out.suffix.lower() != ".mp4":
            raise UserError(f"--out must end in .mp4, got {out}")
        ensure_writable_dir(out.parent if str(out.parent) else ".")
        t0 = time.perf_counter()
        z, used = self.latents(audio, pose)
        x_T = self.noise(seed, ref_frame)
        bar = tqdm(total=len(z), desc="generate", unit="frame", disable=not progress)
        try:
            n = write_mp4(out, resized(self.frames(z, x_T, bar), video_size), audio)
        finally:
            bar.close()
        seconds = time.perf_counter() - t0
        return {"out": str(out), "frames": n, "video_seconds": n / FPS, "audio_seconds": len(audio) / SAMPLE_RATE,
                "compute_seconds": seconds, "pose": used}

    def stream(self, chunks: Iterable[np.ndarray], *, pose: np.ndarray | None = None, seed: int = 0,
               ref_frame: str | Path | None = None, win: Windows = STREAMING) -> Iterator[np.ndarray]:
        """Consumes 16 kHz audio chunks of any size and yields frames as soon as they are decoded (the latents of
        `stream_latents`, decoded from the one shared x_T)."""
        x_T = self.noise(seed, ref_frame)
        for z, _ in self.stream_latents(chunks, pose=pose, win=win):
            yield from self.frames(z, x_T)

    def stream_latents(self, chunks: Iterable[np.ndarray], *, pose: np.ndarray | None = None,
                       win: Windows = STREAMING) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consumes 16 kHz audio chunks of any size and yields (latents, pose in degrees) of the next frames as
        soon as their audio is in.

        Frames [a, a + chunk) are made once the audio reaches frame a + chunk + right (the look-ahead,
        0.52 s by default); speech2latent sees `left` frames of past audio, so latents and pose carry
        across window borders without a seam. Only that much past audio is kept."""
        buf, offset, emitted, seen = np.zeros(0, np.float32), 0, 0, 0
        for chunk in itertools.chain(chunks, [None]):
            if chunk is not None:
                chunk = np.asarray(chunk, np.float32).reshape(-1)
                buf, seen = np.concatenate([buf, chunk]), seen + len(chunk)
                n = seen // SAMPLES_PER_FRAME                       # complete frames so far
                ready = n - win.right                                 # frames whose look-ahead has arrived
            else:
                if seen == 0:
                    return
                n = ready = math.ceil(seen / SAMPLES_PER_FRAME)
                buf = np.pad(buf, (0, (n - offset) * SAMPLES_PER_FRAME - len(buf)))
            while emitted < ready and (ready - emitted >= win.chunk or chunk is None):
                b = min(emitted + win.chunk, ready)
                track = None if pose is None else fit_length(pose, b + win.right)
                yield self._window(buf, offset, emitted, b, n, win, track)
                emitted = b
                drop = max(0, emitted - win.left - offset)            # keep `left` frames of past audio
                buf, offset = buf[drop * SAMPLES_PER_FRAME:], offset + drop


def _read_image(path: str | Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        return np.asarray(Image.open(path).convert("RGB"))
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise UserError(f"cannot read the reference frame {path} ({e}); give a PNG or JPEG image") from e


def _square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop, resized to the DiffAE's size."""
    from PIL import Image

    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return np.asarray(Image.fromarray(image[y:y + s, x:x + s]).resize((size, size), Image.LANCZOS))
