"""The DiffAE trainer on the tiny config: it learns (overfitting one batch), DDIM inversion + sampling
reconstructs its inputs, 1 and 8 devices take the same step, checkpoints round-trip exactly, and a
resumed run continues the identical loss sequence."""

from __future__ import annotations

import json

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import dae
from daetalker_jax.diffusion import ddim
from daetalker_jax.trainers.base import Trainer
from daetalker_jax.trainers.dae import DAETask, to_unit_range


def _config(data_dir, **overrides):
    c = dae.get_config("tiny")
    c.data_dir = str(data_dir)
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def _mesh(n: int):
    return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n], axis_types=(jax.sharding.AxisType.Auto,))


def _losses(workdir) -> list[float]:
    return [json.loads(line)["loss"] for line in open(workdir / "metrics.jsonl")]


class OneBatch(DAETask):
    """Always the same batch (as a Grain iterator, so it checkpoints like the real one)."""

    def dataset(self, shard):
        batch = next(iter(super().dataset(shard)))
        return grain.MapDataset.source([batch]).repeat().to_iter_dataset()


def test_overfits_one_batch_and_inversion_reconstructs_it(tiny_dataset32, tmp_path):
    c = _config(tiny_dataset32, num_steps=40, learning_rate=3e-3, ema_decay=0.0, checkpoint_every=1000)
    trainer = Trainer(c, tmp_path, OneBatch(c), mesh=_mesh(1))
    trainer.run()
    losses = _losses(tmp_path)
    assert np.mean(losses[-5:]) < 0.25 * losses[0], losses
    graphdef, state = nnx.split(trainer.ema_model())
    schedule = trainer.task.schedule

    @jax.jit
    def reconstruct(state, x0):
        model = nnx.merge(graphdef, state)
        z = model.encode(x0)
        rec = ddim.sample(model, ddim.invert(model, x0, z, schedule, 50), z, schedule, 50)
        return rec, ddim.sample(model, jax.random.normal(jax.random.key(0), x0.shape), z, schedule, 50)

    x0 = to_unit_range(jnp.asarray(next(trainer.data)["image"]))
    rec, rnd = reconstruct(state, x0)
    psnr = lambda a: float(10 * jnp.log10(4 / jnp.mean((a - x0) ** 2)))  # noqa: E731  (range [-1, 1])
    assert psnr(rec) > 25 and psnr(rec) > psnr(rnd) + 10, (psnr(rec), psnr(rnd))


def test_one_and_eight_devices_take_the_same_step(tiny_dataset32, tmp_path):
    results = []
    for n in (1, 8):
        c = _config(tiny_dataset32, num_steps=2, checkpoint_every=1000)
        trainer = Trainer(c, tmp_path / f"d{n}", DAETask(c), mesh=_mesh(n))
        trainer.run()
        assert all(len(x.sharding.device_set) == n for x in jax.tree.leaves(trainer.state))
        results.append((_losses(tmp_path / f"d{n}"), nnx.to_pure_dict(trainer.state)))
    (l1, s1), (l8, s8) = results
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4), s1, s8)


def test_checkpoint_round_trip_and_resume_continue_the_same_losses(tiny_dataset32, tmp_path):
    c = _config(tiny_dataset32, num_steps=4, checkpoint_every=2)
    first = Trainer(c, tmp_path / "run", DAETask(c), mesh=_mesh(1))
    first.run()
    saved = jax.device_get((nnx.to_pure_dict(first.state), nnx.to_pure_dict(first.ema)))
    c6 = _config(tiny_dataset32, num_steps=6, checkpoint_every=2)
    resumed = Trainer(c6, tmp_path / "run", DAETask(c6), mesh=_mesh(1))
    assert resumed.step == 4
    restored = jax.device_get((nnx.to_pure_dict(resumed.state), nnx.to_pure_dict(resumed.ema)))
    jax.tree.map(np.testing.assert_array_equal, saved, restored)   # exact
    resumed.run()
    straight = Trainer(c6, tmp_path / "straight", DAETask(c6), mesh=_mesh(1))
    straight.run()
    assert _losses(tmp_path / "run") == _losses(tmp_path / "straight")
    assert len(_losses(tmp_path / "run")) == 6
