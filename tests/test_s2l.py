"""Stage 2 end to end on the tiny corpus: latent extraction round trip, a tiny speech2latent overfitting
one window, and `train --config configs/s2l.py:tiny` with its held-out plot and scalars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grain
import jax
import numpy as np
import pytest
from flax import nnx

from configs import s2l
from daetalker_jax.data import pipeline
from daetalker_jax.data.clip_arrays import ClipArrays
from daetalker_jax.data.extract import extract_latents
from conftest import logged_losses, mesh_of
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
    z, _ = model(batch["mel"], batch["mask"], batch["pose"])
    moved = np.asarray(z)[batch["mask"]].std(0) / target.std(0)   # per latent dimension, over the frames
    assert np.median(moved) > 0.8, "the prediction must move as far as the target does (no collapse to the mean)"


def test_resume_continues_exactly_as_one_run(extracted, tmp_path):
    """4 steps, then resumed to 6, against 6 straight: the same logged losses and the same EMA weights, bit for bit.
    The windows are random and augmented (gain, noise, reverberation, ... from each window's own generator), the
    model has dropout: all of it must continue from the checkpoint (weights, optimiser, RNG, Grain's iterator)."""
    def config(steps: int):
        c = s2l.get_config("tiny")
        c.data_dir, c.num_steps, c.checkpoint_every, c.log_every, c.sample_every = str(extracted), steps, 2, 1, 0
        return c

    assert config(4).augment.noise > 0 and config(4).model.dropout > 0
    Trainer(config(4), tmp_path / "run", S2LTask(config(4)), mesh=mesh_of(1)).run()
    resumed = Trainer(config(6), tmp_path / "run", S2LTask(config(6)), mesh=mesh_of(1))
    assert resumed.step == 4
    resumed.run()
    straight = Trainer(config(6), tmp_path / "straight", S2LTask(config(6)), mesh=mesh_of(1))
    straight.run()
    assert len(logged_losses(tmp_path / "run")) == 6
    assert logged_losses(tmp_path / "run") == logged_losses(tmp_path / "straight")
    jax.tree.map(np.testing.assert_array_equal, *(jax.device_get(nnx.to_pure_dict(t.ema)) for t in (resumed, straight)))


def _tiny_model(extracted, **changes):
    c = s2l.get_config("tiny")
    c.data_dir = str(extracted)
    c.update(changes)
    task = S2LTask(c)
    model = task.build_model(nnx.Rngs(0))
    task.initialize(model)
    model.eval()
    return task, model


def test_utterance_normalisation_makes_speech2latent_deaf_to_gain(extracted):
    """With feature_norm=utterance, a recording 20 dB louder or quieter (a constant on log-mel) gives the same
    latents; padding still changes nothing at valid frames. The global normalisation hears the gain."""
    task, _ = _tiny_model(extracted)
    batch = next(iter(task.dataset(pipeline.Shard())))
    mel, mask, pose = batch["mel"], batch["mask"].copy(), batch["pose"]
    mask[0, -7:] = False
    gain = np.log(10.0 ** 2)   # +20 dB in power
    for norm, deaf in (("utterance", True), ("global", False)):
        _, model = _tiny_model(extracted, feature_norm=norm)
        z, pose_out = model(mel, mask, pose)
        louder, _ = model(mel + np.float32(gain), mask, pose)
        padded = mel.copy()
        padded[0, -28:] = 50.0                                      # junk in the padding
        junk, _ = model(padded, mask, pose)
        valid = mask[..., None]
        assert np.allclose(np.where(valid, junk, 0), np.where(valid, z, 0), atol=1e-5)
        assert np.allclose(louder, z, atol=1e-4) == deaf, norm


def test_velocity_loss_is_the_masked_mean_of_frame_to_frame_errors(extracted):
    task, model = _tiny_model(extracted, velocity_weight=0.5, loss="l1")
    batch = next(iter(task.dataset(pipeline.Shard())))
    batch["mask"][1, 30:] = False
    parts = task.losses(model, batch, batch["pose"])
    z, _ = model(batch["mel"], batch["mask"], batch["pose"])
    target = np.asarray(model.normalize_latents(batch["latents"]))
    z, m = np.asarray(z, np.float64), batch["mask"]
    errors = [np.abs((z[b, t + 1] - z[b, t]) - (target[b, t + 1] - target[b, t])).mean()
              for b in range(len(z)) for t in range(z.shape[1] - 1) if m[b, t] and m[b, t + 1]]
    assert float(parts["velocity_loss"]) == pytest.approx(np.mean(errors), rel=1e-4)
    total, _ = task.loss(model, batch, None, None)
    expected = parts["latent_loss"] + 0.5 * parts["velocity_loss"] + task.config.pose_weight * parts["pose_loss"]
    assert float(total) == pytest.approx(float(expected), rel=1e-6)


def test_augmented_windows_keep_targets_aligned(extracted):
    """Speed perturbation reads 0.9-1.1 x the window's frames and resamples mel, latents, pose and mask to the
    window together; the augmented mel differs from the clean one; the same seed gives the same batches."""
    from daetalker_jax.data.augment import SpeechAugment, resample_frames

    latents = ClipArrays(extracted, "latents")
    extras = {"latents": (latents, 1)}
    augment = SpeechAugment(speed=1.0, noise=1.0)
    batch, again, clean = (next(iter(pipeline.sequence_dataset(str(extracted), "train", 4, 30, seed=3, extras=extras,
                                                              augment=aug))) for aug in (augment, augment, None))
    for k in batch:
        np.testing.assert_array_equal(batch[k], again[k])
    assert batch["mel"].shape == clean["mel"].shape and batch["latents"].shape == (4, 30, 32)
    clips = pipeline.data_source(str(extracted), "clips", "train")
    n_of = {int(clips[i]["clip"]): int(clips[i]["n_frames"]) for i in range(len(clips))}
    for b in range(4):
        clip, start = int(batch["clip"][b]), int(batch["start"][b])
        span = [s for s in range(27, 34) if 0 <= start <= max(0, n_of[clip] - s)]
        padded = [np.pad(latents[clip][start:start + s], ((0, max(0, start + s - n_of[clip])), (0, 0))) for s in span]
        expected = [resample_frames(p, 30) for p in padded]
        assert any(np.allclose(batch["latents"][b], e, atol=1e-5) for e in expected), b
    assert not np.allclose(batch["mel"], clean["mel"])


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
    direct = features_for_frames(encoder, cfg, pipeline.clip_audio(ex), int(ex["n_frames"]))
    np.testing.assert_allclose(stored, direct, rtol=2e-3, atol=2e-3)   # float16 storage

    c = s2l.get_config("tiny")
    c.data_dir, c.features, c.num_steps, c.sample_every, c.checkpoint_every = str(extracted), "speech", 5, 5, 5
    trainer = Trainer(c, tmp_path, S2LTask(c), mesh=mesh_of(2))
    final = trainer.run()
    assert c.feature_layers == 3 and c.feature_dim == 32 and c.speech_model == str(folder.absolute())
    assert np.isfinite(final["loss"])
    logits = np.asarray(trainer.ema_model().layer_logits[...])
    # softmax ignores a common shift, so only differences between the layers' logits are learning
    assert logits.shape == (3,) and np.ptp(logits) > 1e-3, logits
