"""speech2latent, DAE-Talker's stage 2 (PAPER.md section 1.2-1.3): speech features -> one DiffAE latent
per 25 fps video frame.

  features (r per video frame: 4 log-mel frames at 100 Hz, or 2 wav2vec 2.0 / HuBERT frames at 50 Hz,
  whose hidden layers are mixed by a learned softmax-weighted sum)
  -> [remove the utterance's own mean] -> normalise with data statistics -> linear -> strided conv down to
  25 Hz -> N Conformer blocks
  -> pose adaptor: a predictor for (yaw, pitch, roll); the ground-truth (training), predicted or user
     pose is projected back to the model width and added to the hidden sequence
  -> N Conformer blocks -> linear -> z-normalised latent.

The data statistics (feature, pose and latent mean/std) live in the model as `Stat` variables: fixed
before training, saved with every checkpoint, so a trained model maps raw features and poses in
degrees to latents in the encoder's scale on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.models.conformer import Conformer, ConformerConfig, LayerNorm32, masked
from daetalker_jax.models.layers import linear


class Stat(nnx.Variable):
    """A data statistic: not trained, not averaged by the EMA, saved with the model."""


@dataclass(frozen=True)
class Speech2LatentConfig:
    feature_dim: int = 80          # log-mel bins, or the speech encoder's hidden size
    feature_layers: int = 0        # 0: a plain (T, D) feature; L: (T, L, D) hidden states to mix
    per_frame: int = 4             # feature frames per video frame (4 mel at 100 Hz, 2 wav2vec at 50 Hz)
    latent_dim: int = 512
    encoder_blocks: int = 4
    decoder_blocks: int = 4
    pose_hidden: int = 256
    pose_kernel: int = 3
    feature_norm: str = "global"   # "utterance": each sequence's own mean is removed first (gain, microphone)
    conformer: ConformerConfig = ConformerConfig()


def utterance_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of x (B, T, ...) over each sequence's valid steps (mask (B, T)), shaped to broadcast against x.
    On log-mel, subtracting it removes a recording's gain and its microphone's and room's fixed colouring."""
    w = mask.astype(x.dtype).reshape(mask.shape + (1,) * (x.ndim - 2))
    return jnp.sum(x * w, axis=1, keepdims=True) / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1.0)


class PosePredictor(nnx.Module):
    """FastSpeech 2-style variance predictor: 2 x (conv -> ReLU -> LayerNorm -> dropout) -> linear."""

    def __init__(self, dim: int, hidden: int, kernel: int, dropout: float, dtype, *, rngs: nnx.Rngs):
        self.convs = nnx.List([nnx.Conv(c, hidden, kernel_size=(kernel,), padding="SAME", dtype=dtype,
                                        param_dtype=jnp.float32, rngs=rngs) for c in (dim, hidden)])
        self.norms = nnx.List([LayerNorm32(hidden, rngs=rngs) for _ in range(2)])
        self.dropout = nnx.Dropout(dropout, rngs=rngs)
        self.out = linear(hidden, 3, dtype=dtype, rngs=rngs)

    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        for conv, norm in zip(self.convs, self.norms):
            h = self.dropout(norm(nnx.relu(conv(masked(h, mask)))))
        return self.out(h).astype(jnp.float32)


class Speech2Latent(nnx.Module):
    def __init__(self, cfg: Speech2LatentConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        c, dt = cfg.conformer, cfg.conformer.compute_dtype
        stat_shape = (cfg.feature_layers, cfg.feature_dim) if cfg.feature_layers else (cfg.feature_dim,)
        self.feature_mean, self.feature_std = Stat(jnp.zeros(stat_shape)), Stat(jnp.ones(stat_shape))
        self.pose_mean, self.pose_std = Stat(jnp.zeros(3)), Stat(jnp.ones(3))
        self.latent_mean, self.latent_std = Stat(jnp.zeros(cfg.latent_dim)), Stat(jnp.ones(cfg.latent_dim))
        if cfg.feature_layers:
            self.layer_logits = nnx.Param(jnp.zeros(cfg.feature_layers))
        self.input = linear(cfg.feature_dim, c.dim, dtype=dt, rngs=rngs)
        r = cfg.per_frame
        # kernel 2r, stride r: video frame t sees feature frames rt - r/2 .. rt + 3r/2 - 1, centred on its own r.
        self.downsample = nnx.Conv(c.dim, c.dim, kernel_size=(2 * r,), strides=(r,), padding=[(r // 2, r // 2)],
                                   dtype=dt, param_dtype=jnp.float32, rngs=rngs)
        self.input_dropout = nnx.Dropout(c.dropout, rngs=rngs)
        self.encoder = Conformer(c, cfg.encoder_blocks, rngs=rngs)
        self.pose_predictor = PosePredictor(c.dim, cfg.pose_hidden, cfg.pose_kernel, c.dropout, dt, rngs=rngs)
        self.pose_projection = linear(3, c.dim, dtype=dt, rngs=rngs)
        self.decoder = Conformer(c, cfg.decoder_blocks, rngs=rngs)
        self.output = linear(c.dim, cfg.latent_dim, dtype=dt, rngs=rngs)

    def set_stats(self, **stats: np.ndarray) -> None:
        """feature/pose/latent _mean and _std from the training data (see trainers/s2l.py)."""
        for name, value in stats.items():
            var = getattr(self, name)
            if not isinstance(var, Stat) or var[...].shape != np.shape(value):
                raise ValueError(f"statistic {name} of shape {np.shape(value)} does not fit this model")
            var[...] = jnp.asarray(value, jnp.float32)

    def normalize_pose(self, pose_degrees: jax.Array) -> jax.Array:
        return (pose_degrees - self.pose_mean[...]) / self.pose_std[...]

    def denormalize_pose(self, pose: jax.Array) -> jax.Array:
        return pose * self.pose_std[...] + self.pose_mean[...]

    def normalize_latents(self, z: jax.Array) -> jax.Array:
        return (z - self.latent_mean[...]) / self.latent_std[...]

    def denormalize_latents(self, z: jax.Array) -> jax.Array:
        return z * self.latent_std[...] + self.latent_mean[...]

    def __call__(self, features: jax.Array, mask: jax.Array, pose: jax.Array | None = None
                 ) -> tuple[jax.Array, jax.Array]:
        """features (B, r T, [L,] D), mask (B, T) of valid video frames, pose (B, T, 3) in degrees or None
        (then the predicted pose is used). Returns z-normalised latents (B, T, latent_dim) and the
        normalised predicted pose (B, T, 3), both fp32 and zero at padded frames."""
        cfg, dt = self.cfg, self.cfg.conformer.compute_dtype
        feature_mask = jnp.repeat(mask, cfg.per_frame, axis=1)
        x = features.astype(jnp.float32)
        if cfg.feature_norm == "utterance":
            x = x - utterance_mean(x, feature_mask)
        x = (x - self.feature_mean[...]) / self.feature_std[...]
        if cfg.feature_layers:
            x = jnp.einsum("btld,l->btd", x, jax.nn.softmax(self.layer_logits[...]))
        x = masked(self.input(x.astype(dt)), feature_mask)
        h = self.input_dropout(nnx.swish(self.downsample(x)))
        h = self.encoder(h, mask)
        predicted = masked(self.pose_predictor(h, mask), mask)
        given = jax.lax.stop_gradient(predicted) if pose is None else self.normalize_pose(pose)
        h = h + self.pose_projection(given.astype(dt))
        h = self.decoder(masked(h, mask), mask)
        return masked(self.output(h).astype(jnp.float32), mask), predicted

    def predict(self, features: jax.Array, mask: jax.Array, pose: jax.Array | None = None
                ) -> tuple[jax.Array, jax.Array]:
        """Latents in the encoder's scale and the pose in degrees that the decoder was given."""
        z, predicted = self(features, mask, pose)
        used = self.denormalize_pose(predicted) if pose is None else pose
        return self.denormalize_latents(z), used
