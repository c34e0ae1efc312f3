"""Stage 2: speech2latent. Random windows of a few seconds (optionally augmented: `data/augment.py`); masked
L1/L2 on z-normalised latents of the frozen DiffAE encoder (`extract --dae`), optionally plus the same loss on
their frame-to-frame changes (`velocity_weight`), plus the weighted MSE of the pose predictor on normalised
(yaw, pitch, roll); the pose projection is fed the ground-truth pose (teacher forcing, DAE-Talker Fig. 1).
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from daetalker_jax.data import pipeline
from daetalker_jax.data.augment import SpeechAugment
from daetalker_jax.data.clip_arrays import ClipArrays
from daetalker_jax.data.extract import splits_of
from daetalker_jax.data.features import MELS_PER_FRAME, N_MELS
from daetalker_jax.errors import UserError
from daetalker_jax.models.conformer import ConformerConfig
from daetalker_jax.models.speech2latent import Speech2Latent, Speech2LatentConfig

CONFORMER_FIELDS = ("dim", "heads", "ffn_dim", "kernel", "dropout", "dtype")


def model_config(config: ml_collections.ConfigDict) -> Speech2LatentConfig:
    m = config.model
    speech = config.features == "speech"
    return Speech2LatentConfig(
        feature_dim=config.feature_dim if speech else N_MELS, feature_layers=config.feature_layers if speech else 0,
        per_frame=2 if speech else MELS_PER_FRAME, latent_dim=config.latent_dim, encoder_blocks=m.encoder_blocks,
        decoder_blocks=m.decoder_blocks, pose_hidden=m.pose_hidden, pose_kernel=m.pose_kernel,
        feature_norm=config.get("feature_norm", "global"),
        conformer=ConformerConfig(**{k: m[k] for k in CONFORMER_FIELDS}))


def augmentation(config: ml_collections.ConfigDict) -> SpeechAugment | None:
    """The config's speech augmentation (`data/augment.py`), None when every operation is off or the features
    are not log-mel (it works on mel spectra)."""
    augment = SpeechAugment.from_config(config.get("augment", {}))
    return augment if augment.active and config.features == "mel" else None


class S2LTask:
    def __init__(self, config: ml_collections.ConfigDict):
        if config.features not in ("mel", "speech"):
            raise UserError(f"--config.features must be mel or speech, got {config.features!r}")
        if config.loss not in ("l1", "l2"):
            raise UserError(f"--config.loss must be l1 or l2, got {config.loss!r}")
        if config.get("feature_norm", "global") not in ("global", "utterance"):
            raise UserError(f"--config.feature_norm must be global or utterance, got {config.feature_norm!r}")
        for name, value in dict(config.get("augment", {})).items():
            if not 0 <= value <= (60 if name == "gain_db" else 1):
                raise UserError(f"--config.augment.{name} must be a probability in 0..1 (gain_db: 0..60 dB), got "
                                f"{value}")
        if not 0 <= config.get("velocity_weight", 0.0):
            raise UserError(f"--config.velocity_weight must be >= 0, got {config.velocity_weight}")
        self.config = config
        if not config.latent_dim:   # a new run: read the sizes from the extracted data, and record them
            meta = ClipArrays(config.data_dir, "latents").meta
            config.latent_dim, config.image_size, config.dae = meta["latent_dim"], meta["image_size"], meta["dae"]
            if config.features == "speech":
                speech = ClipArrays(config.data_dir, "speech").meta
                config.feature_dim, config.feature_layers = speech["hidden_size"], speech["layers"]
                config.speech_model = speech["speech_model"]
        self._held_out = None

    def build_model(self, rngs: nnx.Rngs) -> Speech2Latent:
        return Speech2Latent(model_config(self.config), rngs=rngs)

    def initialize(self, model: Speech2Latent) -> None:
        """Statistics of the train split: latents and speech features from their extraction, pose and
        log-mel from the clips."""
        c = self.config
        latents = ClipArrays(c.data_dir, "latents").meta
        source = pipeline.data_source(c.data_dir, "clips", c.split)
        pose = np.concatenate([source[i]["pose"] for i in range(len(source))]).astype(np.float64)
        stats = {"latent_mean": latents["mean"], "latent_std": latents["std"],
                 "pose_mean": pose.mean(0), "pose_std": np.maximum(pose.std(0), 1e-3)}
        centred = c.get("feature_norm", "global") == "utterance"   # each sequence less its own mean: mean ~0
        if c.features == "speech":   # the extraction's global statistics; centred, the std is an upper bound
            speech = ClipArrays(c.data_dir, "speech").meta
            mean = np.zeros_like(np.asarray(speech["mean"])) if centred else speech["mean"]
            stats.update(feature_mean=mean, feature_std=speech["std"])
        else:
            mel = np.concatenate([m - m.mean(0) if centred else m for m in
                                  (np.asarray(source[i]["mel"], np.float64) for i in range(len(source)))])
            stats.update(feature_mean=mel.mean(0), feature_std=np.maximum(mel.std(0), 1e-3))
        model.set_stats(**{k: np.asarray(v, np.float32) for k, v in stats.items()})

    def _extras(self) -> dict:
        extras = {"latents": (pipeline.Memo(ClipArrays(self.config.data_dir, "latents"), 256), 1)}   # ~2 KB a frame
        if self.config.features == "speech":
            extras["speech"] = (ClipArrays(self.config.data_dir, "speech"), 2)
        return extras

    def dataset(self, shard: pipeline.Shard):
        c = self.config
        return pipeline.sequence_dataset(c.data_dir, c.split, c.batch_size, c.window_frames, seed=c.seed,
                                         shard=shard, extras=self._extras(), workers=c.data_workers,
                                         augment=augmentation(c))

    def batch_spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The global batch's shapes from the config alone (`trainers.base.compile_step`): log-mel features and
        a given `latent_dim` (the DiffAE's z_channels) fix them all."""
        c = self.config
        return pipeline.sequence_batch_spec(c.batch_size, c.window_frames, {"latents": ((c.latent_dim,), 1)})

    def _features(self, batch: dict) -> jax.Array:
        return batch["speech"] if self.config.features == "speech" else batch["mel"]

    def losses(self, model: Speech2Latent, batch: dict, pose: jax.Array | None) -> dict[str, jax.Array]:
        """Masked latent loss (l1/l2, mean over latent dims and valid frames), the same loss on the latents'
        frame-to-frame changes (velocity), and pose MSE."""
        mask = batch["mask"]
        z, predicted = model(self._features(batch), mask, pose)
        target = model.normalize_latents(batch["latents"].astype(jnp.float32))
        pose_err = jnp.mean((predicted - model.normalize_pose(batch["pose"])) ** 2, axis=-1)
        moving = mask[:, 1:] & mask[:, :-1]
        return {"latent_loss": self._masked_mean(self._per_frame(z - target), mask),
                "velocity_loss": self._masked_mean(self._per_frame(jnp.diff(z, axis=1) - jnp.diff(target, axis=1)),
                                                   moving),
                "pose_loss": self._masked_mean(pose_err, mask)}

    def _per_frame(self, diff: jax.Array) -> jax.Array:
        return jnp.mean(jnp.abs(diff) if self.config.loss == "l1" else diff**2, axis=-1)

    @staticmethod
    def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
        weight = mask.astype(jnp.float32)
        return jnp.sum(x * weight) / jnp.maximum(weight.sum(), 1.0)

    def loss(self, model: Speech2Latent, batch: dict, key: jax.Array, sharding) -> tuple[jax.Array, dict]:
        parts = self.losses(model, batch, batch["pose"])
        c = self.config
        total = parts["latent_loss"] + c.get("velocity_weight", 0.0) * parts["velocity_loss"] + \
            c.pose_weight * parts["pose_loss"]
        return total, parts

    def held_out_clip(self) -> dict[str, np.ndarray]:
        """The first clip of the held-out split (val, else test, else train) as a batch of one."""
        if self._held_out is None:
            c = self.config
            split = next((s for s in ("val", "test", c.split) if s in splits_of(c.data_dir)), c.split)
            ex = pipeline.data_source(c.data_dir, "clips", split)[0]
            clip, n = int(ex["clip"]), int(ex["n_frames"])
            batch = {"mel": np.asarray(ex["mel"]), "pose": np.asarray(ex["pose"]), "mask": np.ones(n, bool)}
            for name, (arrays, _) in self._extras().items():
                batch[name] = np.asarray(arrays[clip], np.float32)
            self._held_out = {k: v[None] for k, v in batch.items()}
        return self._held_out

    def samples(self, ema_model: Speech2Latent, batch: dict, key: jax.Array) -> tuple[np.ndarray, dict[str, float]]:
        """On the held-out clip: latent loss with the true pose and with the predicted pose, pose error in
        degrees, and a plot of predicted vs target latents (first 3 principal components) and pose."""
        clip = self.held_out_clip()
        replicated = NamedSharding(jax.tree.leaves(nnx.state(ema_model))[0].sharding.mesh, PartitionSpec())
        clip_global = {k: jax.make_array_from_process_local_data(replicated, v) for k, v in clip.items()}
        graphdef, state = nnx.split(ema_model)

        @jax.jit
        def run(state, b):
            model = nnx.merge(graphdef, state)
            true_pose, free = self.losses(model, b, b["pose"]), self.losses(model, b, None)
            z, predicted = model(self._features(b), b["mask"], b["pose"])
            return (true_pose, free, model.denormalize_latents(z), model.denormalize_pose(predicted))

        true_pose, free, z, pose = jax.device_get(run(state, clip_global))
        scalars = {"val/latent_loss": float(true_pose["latent_loss"]),
                   "val/latent_loss_predicted_pose": float(free["latent_loss"]),
                   "val/pose_mae_deg": float(np.abs(pose[0] - clip["pose"][0]).mean())}
        return plot_prediction(z[0], clip["latents"][0], pose[0], clip["pose"][0]), scalars


def plot_prediction(z: np.ndarray, target: np.ndarray, pose: np.ndarray, true_pose: np.ndarray) -> np.ndarray:
    """RGB image: the target latents' first 3 principal components with the prediction projected on the
    same axes, and yaw/pitch/roll predicted vs true, over time (frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    mean = target.mean(0)
    _, _, vt = np.linalg.svd(target - mean, full_matrices=False)
    fig, axes = plt.subplots(6, 1, figsize=(8, 10), sharex=True)
    for i, ax in enumerate(axes[:3]):
        ax.plot((target - mean) @ vt[i], label="target", color="k")
        ax.plot((z - mean) @ vt[i], label="predicted", color="tab:red")
        ax.set_ylabel(f"PC{i + 1}")
    for i, (ax, name) in enumerate(zip(axes[3:], ("yaw", "pitch", "roll"))):
        ax.plot(true_pose[:, i], label="true", color="k")
        ax.plot(pose[:, i], label="predicted", color="tab:blue")
        ax.set_ylabel(f"{name} (deg)")
    axes[0].legend(loc="upper right")
    axes[3].legend(loc="upper right")
    axes[-1].set_xlabel("video frame (25 fps)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return np.asarray(Image.open(buf).convert("RGB"))
