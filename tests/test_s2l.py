"""Stage 2 end to end on the tiny corpus: latent extraction round trip, a tiny speech2latent overfitting
one window, and `train --config configs/s2l.py:tiny` with its held-out plot and scalars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grain
import numpy as np
from flax import nnx

from configs import s2l
from daetalker_jax.data import pipeline
from daetalker_jax.data.clip_arrays import ClipArrays
from daetalker_jax.data.extract import extract_latents
from conftest import mesh_of
from daetalker_jax.trainers.base import Trainer, load_trained
from daetalker_jax.trainers.dae import to_unit_range
from daetalker_jax.trainers.s2l import S2LTask

ROOT = Path(__file__).resolve().parents[1]


def test_stored_latents_equal_the_encoder(dae_run, extracted):
    config, model = load_trained(dae_run)
    store = ClipArrays(extracted, "latents")
    meta = store.meta
    assert meta["complete"] and meta["latent_dim"] == config.model.z_channels == 32 and meta["step"] == 2
    frames = pipeline.data_source(str(extracted), "frames", "train")
    picks = [frames[i] for i in range(0, len(frames), max(1, len(frames) // 12))]
    z = np.asarray(model.encode(to_unit_range(np.stack([p["image"] for p in picks]))))
    stored = np.stack([store[int(p["clip"])][int(p["frame"])] for p in picks])
    np.testing.assert_allclose(stored, z, rtol=1e-4, atol=1e-5)
    clips = pipeline.data_source(str(extracted), "clips", "train")
    for i in range(len(clips)):
        assert store[int(clips[i]["clip"])].shape == (int(clips[i]["n_frames"]), 32)
    every = np.concatenate([store[c] for c in meta["clips"]["train"]])
    np.testing.assert_allclose(meta["mean"], every.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(meta["std"], every.std(0), rtol=1e-4, atol=1e-6)
    before = store.path(meta["clips"]["train"][0]).stat().st_mtime_ns
    extract_latents(dae_run, extracted)   # complete for this checkpoint: nothing is redone
    assert store.path(meta["clips"]["train"][0]).stat().st_mtime_ns == before


def test_extract_refuses_a_dae_of_another_image_size(dae_run, tiny_dataset, tmp_path):
    data_dir, _ = tiny_dataset   # 64 px frames; the DiffAE works at 32 px
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.extract", "--data", str(data_dir), "--dae",
                             str(dae_run)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "32px" in result.stderr and "64px" in result.stderr, result.stderr[-1500:]
    assert not (data_dir / "daetalker_data" / "derived").exists()


class OneWindow(S2LTask):
    def dataset(self, shard):
        batch = next(iter(super().dataset(shard)))
        return grain.MapDataset.source([batch]).repeat().to_iter_dataset()


def test_tiny_speech2latent_overfits_one_window(extracted, tmp_path):
    c = s2l.get_config("tiny")
    c.data_dir, c.loss, c.batch_size, c.num_steps = str(extracted), "l2", 2, 150
    c.learning_rate, c.ema_decay, c.sample_every, c.checkpoint_every = 3e-3, 0.0, 0, 1000
    c.model.dropout = 0.0
    task = OneWindow(c)
    trainer = Trainer(c, tmp_path, task, mesh=mesh_of(2))
    final = trainer.run()
    batch = next(iter(task.dataset(pipeline.Shard())))
    model = trainer.ema_model()
    target = np.asarray(model.normalize_latents(batch["latents"]))[batch["mask"]]
    variance = float(target.var(0).mean())   # the loss of predicting each dimension's mean
    assert final["latent_loss"] < 0.05 * variance, (final, variance)
    assert final["pose_loss"] < 0.05


def test_train_cli_s2l_writes_plot_scalars_and_a_loadable_run(extracted, tmp_path):
    """Samples at step 10 and training goes on: the EMA model used for them must not alias the train state."""
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.train", "--config", "configs/s2l.py:tiny",
                             "--workdir", str(tmp_path), f"--config.data_dir={extracted}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    losses = [r for r in rows if "loss" in r]
    assert len(losses) == 20 and all(r["latent_loss"] > 0 and r["pose_loss"] > 0 for r in losses)
    val = [r for r in rows if "val/latent_loss" in r]
    assert [r["step"] for r in val] == [10, 20] and all(np.isfinite(r["val/pose_mae_deg"]) for r in val)
    from PIL import Image

    plot = np.asarray(Image.open(tmp_path / "samples" / "step_0000020.png"))
    assert plot.ndim == 3 and plot.shape[0] > 400 and plot.std() > 10
    config, model = load_trained(tmp_path)
    assert config.latent_dim == 32 and config.dae.endswith("dae_run0")
    z, pose = model.predict(np.zeros((1, 40, 80), np.float32), np.ones((1, 10), bool))
    assert z.shape == (1, 10, 32) and pose.shape == (1, 10, 3)
    stats = np.asarray(model.latent_std[...])
    np.testing.assert_allclose(stats, ClipArrays(extracted, "latents").meta["std"], rtol=1e-6)
    assert isinstance(nnx.state(model), nnx.State)


def test_precomputed_speech_features_train_speech2latent(extracted, tmp_path):
    """wav2vec 2.0 features (the tiny golden-test checkpoint) precomputed into the dataset, then a few steps
    on them: the layer-mixing weights learn."""
    from daetalker_jax.data.extract import extract_speech
    from daetalker_jax.models.wav2vec2 import features_for_frames, load_encoder

    folder = ROOT / "tests" / "data" / "wav2vec2_tiny"
    meta = extract_speech(folder, extracted)
    assert meta["complete"] and meta["layers"] == 3 and meta["hidden_size"] == 32
    store = ClipArrays(extracted, "speech")
    clips = pipeline.data_source(str(extracted), "clips", "train")
    ex = clips[0]
    stored = store[int(ex["clip"])]
    assert stored.dtype == np.float16 and stored.shape == (2 * int(ex["n_frames"]), 3, 32)
    cfg, encoder = load_encoder(folder)
    direct = features_for_frames(encoder, cfg, np.asarray(ex["audio"], np.float32) / 32768.0, int(ex["n_frames"]))
    np.testing.assert_allclose(stored, direct, rtol=2e-3, atol=2e-3)   # float16 storage

    c = s2l.get_config("tiny")
    c.data_dir, c.features, c.num_steps, c.sample_every, c.checkpoint_every = str(extracted), "speech", 5, 5, 5
    trainer = Trainer(c, tmp_path, S2LTask(c), mesh=mesh_of(2))
    final = trainer.run()
    assert c.feature_layers == 3 and c.feature_dim == 32 and c.speech_model == str(folder.absolute())
    assert np.isfinite(final["loss"])
    logits = np.asarray(trainer.ema_model().layer_logits[...])
    assert logits.shape == (3,) and np.abs(logits).max() > 0
