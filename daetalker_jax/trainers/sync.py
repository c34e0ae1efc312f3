"""The audio-visual sync expert (metrics/syncnet.py: SyncNet) on the shared trainer, for LSE-D/LSE-C.

Data: random windows of 5 + 2 * max_shift frames from the prepared clips (pipeline.sequence_dataset) with
the aligned log-mel and, as an extra, the grayscale mouth crops (`extract_mouths`, made here on first use).
In each window (on device, from the step's key) a 5-frame video window at a random valid start t, its
aligned 0.2 s of log-mel (positive), and the same clip's 0.2 s at t + s, min_shift <= |s| <= max_shift,
inside the clip (negative); windows of clips too short for a negative only contribute their positive.

Loss: SyncNet-style binary cross-entropy on the cosine similarity of the unit embeddings, as the Wav2Lip
lip-sync expert (one same-clip shifted negative per positive, balanced 1:1), with a learnt affine
calibration logit = scale * cos + bias instead of Wav2Lip's ReLU embeddings (which keep cos in [0, 1]).
The official SyncNet used a contrastive (margin) loss on the Euclidean distance; for unit vectors the
distance is sqrt(2 - 2 cos), so LSE-D ranks pairs as the loss does.
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from daetalker_jax.data import pipeline
from daetalker_jax.data.extract import extract_mouths, mouth_store, splits_of
from daetalker_jax.data.features import MELS_PER_FRAME
from daetalker_jax.errors import UserError
from daetalker_jax.metrics.syncnet import WINDOW, SyncNet, SyncNetConfig, embed_clip, offset_curve, scores


def model_config(config: ml_collections.ConfigDict) -> SyncNetConfig:
    m = config.model
    return SyncNetConfig(mouth_size=tuple(int(x) for x in config.mouth_size), widths=tuple(int(x) for x in m.widths),
                         hidden=int(m.hidden), embed_dim=int(m.embed_dim))


def shift_accuracy(v: np.ndarray, a: np.ndarray, min_shift: int, max_shift: int) -> float:
    """Over every window i and shift min_shift <= |s| <= max_shift inside the clip: the fraction of
    (i, s) where the aligned audio is nearer to the video than the shifted one (chance 0.5)."""
    d = np.sqrt(np.maximum(2 - 2 * v @ a.T, 0))   # unit embeddings
    n = len(v)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    pairs = (np.abs(j - i) >= min_shift) & (np.abs(j - i) <= max_shift)
    if not pairs.any():
        return float("nan")
    return float((np.diag(d)[:, None] < d)[pairs].mean())


class SyncTask:
    def __init__(self, config: ml_collections.ConfigDict):
        if not 1 <= config.min_shift <= config.max_shift:
            raise UserError(f"need 1 <= min_shift <= max_shift, got {config.min_shift} and {config.max_shift}")
        self.config = config
        h, w = (int(x) for x in config.mouth_size)
        extract_mouths(config.data_dir, h, w)   # once per dataset and crop size; a no-op afterwards
        self.mouths = mouth_store(config.data_dir, h, w)
        self._held_out = None

    @property
    def window_frames(self) -> int:
        return WINDOW + 2 * self.config.max_shift

    def build_model(self, rngs: nnx.Rngs) -> SyncNet:
        return SyncNet(model_config(self.config), rngs=rngs)

    def initialize(self, model: SyncNet) -> None:
        """Per-bin log-mel mean/std of the train split."""
        source = pipeline.data_source(self.config.data_dir, "clips", self.config.split)
        mel = np.concatenate([source[i]["mel"] for i in range(len(source))]).astype(np.float64)
        model.set_stats(mel.mean(0), np.maximum(mel.std(0), 1e-3))

    def dataset(self, shard: pipeline.Shard):
        c = self.config
        return pipeline.sequence_dataset(c.data_dir, c.split, c.batch_size, self.window_frames, seed=c.seed,
                                         shard=shard, extras={"mouths": (self.mouths, 1)}, workers=c.data_workers)

    def pick(self, batch: dict, key: jax.Array) -> dict[str, jax.Array]:
        """Video window, aligned and shifted mel of every window (see the module docstring)."""
        c = self.config
        mask = batch["mask"]
        positions = jnp.arange(mask.shape[1] - WINDOW + 1)
        n = mask.sum(axis=1)
        start_ok = positions[None] <= (n - WINDOW)[:, None]
        k_t, k_u = jax.random.split(key)
        t = jax.random.categorical(k_t, jnp.where(start_ok, 0.0, -jnp.inf))
        d = jnp.abs(positions[None] - t[:, None])
        neg_ok = start_ok & (d >= c.min_shift) & (d <= c.max_shift)
        has_neg = neg_ok.any(axis=1)
        u = jax.random.categorical(k_u, jnp.where(neg_ok | ~has_neg[:, None], 0.0, -jnp.inf))

        def cut(x, start, size):
            return jax.vmap(lambda row, s: jax.lax.dynamic_slice_in_dim(row, s, size, axis=0))(x, start)

        mel_len = WINDOW * MELS_PER_FRAME
        return {"video": cut(batch["mouths"], t, WINDOW), "pos": cut(batch["mel"], t * MELS_PER_FRAME, mel_len),
                "neg": cut(batch["mel"], u * MELS_PER_FRAME, mel_len), "has_neg": has_neg.astype(jnp.float32),
                "valid": start_ok.any(axis=1).astype(jnp.float32)}

    def loss(self, model: SyncNet, batch: dict, key: jax.Array, sharding) -> tuple[jax.Array, dict]:
        p = self.pick(batch, key)
        v = model.embed_video(p["video"])
        a = model.embed_audio(jnp.concatenate([p["pos"], p["neg"]]))
        a_pos, a_neg = jnp.split(a, 2)
        pos, neg = model.logit(v, a_pos), model.logit(v, a_neg)
        n_pos, n_neg = jnp.maximum(p["valid"].sum(), 1.0), jnp.maximum(p["has_neg"].sum(), 1.0)
        pos_loss = jnp.sum(jax.nn.softplus(-pos) * p["valid"]) / n_pos
        neg_loss = jnp.sum(jax.nn.softplus(neg) * p["has_neg"]) / n_neg
        aux = {"pos_loss": pos_loss, "neg_loss": neg_loss,
               "accuracy": jnp.sum((pos > neg) * p["has_neg"]) / n_neg,
               "cos_pos": jnp.sum(jnp.sum(v * a_pos, -1) * p["valid"]) / n_pos,
               "cos_neg": jnp.sum(jnp.sum(v * a_neg, -1) * p["has_neg"]) / n_neg}
        return 0.5 * (pos_loss + neg_loss), aux

    def held_out_clip(self) -> tuple[np.ndarray, np.ndarray]:
        """(mouth crops, log-mel) of the first clip of the held-out split (val, else test, else train)."""
        if self._held_out is None:
            c = self.config
            split = next((s for s in ("val", "test", c.split) if s in splits_of(c.data_dir)), c.split)
            ex = pipeline.data_source(c.data_dir, "clips", split)[0]
            self._held_out = np.asarray(self.mouths[int(ex["clip"])]), np.asarray(ex["mel"])
        return self._held_out

    def evaluate(self, model: SyncNet, mouths: np.ndarray, mel: np.ndarray) -> dict:
        """Shift accuracy (chance 0.5) and LSE of one clip."""
        c = self.config
        v, a = embed_clip(model, mouths, mel)
        result = scores(offset_curve(v, a, c.max_shift), c.max_shift)
        result["accuracy"] = shift_accuracy(v, a, c.min_shift, c.max_shift)
        return result

    def samples(self, ema_model: SyncNet, batch: dict, key: jax.Array) -> tuple[np.ndarray, dict[str, float]]:
        """On the held-out clip: shift accuracy, LSE-D, LSE-C, offset, and a plot of distance vs offset."""
        graphdef, state = nnx.split(ema_model)
        model = nnx.merge(graphdef, jax.device_get(state))   # on this host: the clip is host data
        r = self.evaluate(model, *self.held_out_clip())
        scalars = {"val/sync_accuracy": r["accuracy"], "val/lse_d": r["lse_d"], "val/lse_c": r["lse_c"],
                   "val/offset": float(r["offset"])}
        return plot_curve(r["distances"], self.config.max_shift), scalars


def plot_curve(distances: np.ndarray, max_offset: int) -> np.ndarray:
    """RGB image of the mean embedding distance per audio-visual offset (frames)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(np.arange(-max_offset, max_offset + 1), distances, "o-", color="k")
    ax.axvline(0, color="tab:green", lw=0.8)
    ax.set_xlabel("offset (frames; > 0: video lags audio)")
    ax.set_ylabel("mean distance")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return np.asarray(Image.open(buf).convert("RGB"))
