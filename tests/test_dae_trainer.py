"""The DiffAE trainer on the tiny config: it learns (overfitting one batch), DDIM inversion + sampling
reconstructs its inputs, 1 and 8 devices take the same step, checkpoints round-trip exactly, and a
resumed run continues the identical loss sequence."""

from __future__ import annotations

import json

import grain
import jax
import numpy as np
import pytest
from flax import nnx

from PIL import Image

from configs import dae
from conftest import logged_losses
from daetalker_jax.trainers.base import Trainer
from daetalker_jax.trainers.dae import DAETask


def _config(data_dir, **overrides):
    c = dae.get_config("tiny")
    c.data_dir = str(data_dir)
    for k, v in overrides.items():
        setattr(c, k, v)
    return c


def _mesh(n: int):
    return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n], axis_types=(jax.sharding.AxisType.Auto,))


class OneBatch(DAETask):
    """Always the same batch (as a Grain iterator, so it checkpoints like the real one)."""

    def dataset(self, shard):
        batch = next(iter(super().dataset(shard)))
        return grain.MapDataset.source([batch]).repeat().to_iter_dataset()


def test_overfits_one_batch_and_inversion_reconstructs_it(tiny_dataset32, tmp_path):
    c = _config(tiny_dataset32, num_steps=40, learning_rate=3e-3, ema_decay=0.0, checkpoint_every=1000,
                sample_every=40, invert_steps=50, sample_steps=50)
    trainer = Trainer(c, tmp_path, OneBatch(c), mesh=_mesh(1))
    trainer.run()
    losses = logged_losses(tmp_path)
    assert np.mean(losses[-5:]) < 0.25 * losses[0], losses
    # The sample grid: originals, EMA reconstruction from the inverted x_T, from a shared random x_T.
    grid = np.asarray(Image.open(tmp_path / "samples" / "step_0000040.png"), np.float64) / 127.5 - 1
    assert grid.shape == (3 * 32, c.sample_count * 32, 3)
    original, inverted, shared = np.split(grid, 3, axis=0)
    psnr = lambda a: 10 * np.log10(4 / np.mean((a - original) ** 2))  # noqa: E731  (range [-1, 1])
    assert psnr(inverted) > 25 and psnr(inverted) > psnr(shared) + 10, (psnr(inverted), psnr(shared))
    logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")][-1]   # uint8 PSNRs of the same grid
    assert logged["step"] == 40 and abs(logged["sample/psnr_inverted"] - psnr(inverted)) < 0.5


def test_one_and_eight_devices_take_the_same_step(tiny_dataset32, tmp_path):
    results = []
    for n in (1, 8):
        c = _config(tiny_dataset32, num_steps=2, checkpoint_every=1000)
        trainer = Trainer(c, tmp_path / f"d{n}", DAETask(c), mesh=_mesh(n))
        trainer.run()
        assert all(len(x.sharding.device_set) == n for x in jax.tree.leaves(trainer.state))
        results.append((logged_losses(tmp_path / f"d{n}"), nnx.to_pure_dict(trainer.state)))
    (l1, s1), (l8, s8) = results
    np.testing.assert_allclose(l1, l8, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=1e-4), s1, s8)


def test_ema_warm_up_forgets_the_initial_weights(tiny_dataset32, tmp_path):
    """trainers/base.py `ema_decay_at`: update t mixes with decay min(ema_decay, (1 + t) / (10 + t)), so the
    first step keeps 10% of the random initial weights rather than 90% (tiny's ema_decay 0.9)."""
    import jax.numpy as jnp

    from daetalker_jax.trainers.base import ema_decay_at

    c = _config(tiny_dataset32, num_steps=1, checkpoint_every=1000)
    assert c.ema_warmup and c.ema_decay == 0.9
    np.testing.assert_allclose([float(ema_decay_at(c, jnp.int32(t))) for t in (0, 1, 80, 10**6)],
                               [0.1, 2 / 11, 0.9, 0.9], rtol=1e-6)
    off = _config(tiny_dataset32, ema_warmup=False)
    assert float(ema_decay_at(off, jnp.int32(0))) == np.float32(0.9)
    trainer = Trainer(c, tmp_path, DAETask(c), mesh=_mesh(1))
    initial = jax.device_get(nnx.to_pure_dict(trainer.ema))
    trainer.run()
    trained, ema = (jax.device_get(nnx.to_pure_dict(t)) for t in (trainer.state, trainer.ema))
    jax.tree.map(lambda e, p0, p1: np.testing.assert_allclose(e, 0.1 * p0 + 0.9 * p1, atol=1e-6, rtol=1e-5),
                 ema, initial, trained[0])


def test_checkpoint_round_trip_and_resume_continue_the_samelogged_losses(tiny_dataset32, tmp_path):
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
    assert logged_losses(tmp_path / "run") == logged_losses(tmp_path / "straight")
    assert len(logged_losses(tmp_path / "run")) == 6


def test_packing_round_trips_a_tree_of_mixed_dtypes():
    from daetalker_jax.trainers.packing import Packing

    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "count": np.int32(7),
            "b": np.linspace(0, 1, 4, dtype=np.float32), "n": np.arange(3, dtype=np.int32)}
    flat, leaves = Packing(tree), Packing(tree, flat=False)
    buffers = flat.pack(tree)
    assert [(b.shape, b.dtype) for b in buffers] == [((10,), np.float32), ((4,), np.int32)]
    assert [(s.shape, s.dtype) for s in flat.specs(None)] == [((10,), np.float32), ((4,), np.int32)]
    assert len(leaves.pack(tree)) == 4
    for p in (flat, leaves):
        jax.tree.map(np.testing.assert_array_equal, p.unpack(p.pack(tree)), tree)


def test_packed_and_leaf_list_state_train_alike_and_share_checkpoints(tiny_dataset32, tmp_path):
    """pack_state only changes how the state crosses the step (trainers/packing.py): the same losses and
    weights (up to XLA's fusion-order rounding), and a packed run's checkpoint resumes unpacked."""
    runs = {}
    for mode in ("on", "off"):
        c = _config(tiny_dataset32, num_steps=3, checkpoint_every=3, pack_state=mode)
        trainer = Trainer(c, tmp_path / mode, DAETask(c), mesh=_mesh(1))
        trainer.run()
        runs[mode] = logged_losses(tmp_path / mode), jax.device_get(nnx.to_pure_dict(trainer.ema))
        jax.tree.map(np.testing.assert_array_equal, runs[mode][1],   # what samples and extraction decode with
                     jax.device_get(nnx.to_pure_dict(nnx.state(trainer.ema_model(), nnx.Param))))
    np.testing.assert_allclose(runs["on"][0], runs["off"][0], rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), runs["on"][1], runs["off"][1])
    c4 = _config(tiny_dataset32, num_steps=4, checkpoint_every=3, pack_state="off")
    resumed = Trainer(c4, tmp_path / "on", DAETask(c4), mesh=_mesh(1))
    assert resumed.step == 3
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(nnx.to_pure_dict(resumed.ema)), runs["on"][1])


def test_mouth_weight_scales_the_loss_in_the_mouth_box_only():
    from jax.sharding import NamedSharding, PartitionSpec

    from conftest import mesh_of
    from daetalker_jax.trainers.dae import mouth_weight_map, to_unit_range

    w = np.asarray(mouth_weight_map(32, 10.0))[..., 0]
    assert w.shape == (32, 32) and w[16:28, 8:24].min() == 10.0 and (w == 10.0).sum() == 12 * 16
    assert np.all(np.asarray(mouth_weight_map(32, 1.0)) == 1.0)
    c = dae.get_config("tiny")
    task = DAETask(c)
    model = task.build_model(nnx.Rngs(0))
    model.eval()   # no dropout: every call below sees the same network
    batch = {"image": np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)}
    key, sharding = jax.random.key(3), NamedSharding(mesh_of(1), PartitionSpec("data"))
    plain = float(task.loss(model, batch, key, sharding)[0])
    c.mouth_weight = 10.0
    weighted = float(task.loss(model, batch, key, sharding)[0])
    # by hand, with the loss's own draws of t and noise
    x0 = to_unit_range(batch["image"])
    k_t, k_noise = jax.random.split(key)
    t = jax.random.randint(k_t, (2,), 0, task.schedule.num_timesteps)
    noise = jax.random.normal(k_noise, x0.shape)
    err = np.asarray((model(task.schedule.q_sample(x0, t, noise), t, model.encode(x0))
                      - task.schedule.target(x0, t, noise)) ** 2)
    assert np.isclose(plain, err.mean(), rtol=1e-5)
    assert np.isclose(weighted, (err * w[None, :, :, None]).mean(), rtol=1e-5)


@pytest.mark.parametrize("variant", list(dae.MODELS))
def test_every_config_variant_builds_and_maps_an_image(variant):
    """Each variant's layout fits its image size: the encoder gives z_channels, the UNet returns the input
    shape (abstract evaluation, no parameters allocated). The main-job configs use the mouth weight with
    v prediction (see mouth_weight_map)."""
    c = dae.get_config(variant)
    task = DAETask(c)
    s = c.model.image_size
    model = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
    x = jax.ShapeDtypeStruct((2, s, s, 3), jax.numpy.float32)
    z = nnx.eval_shape(lambda m, x: m.encode(x), model, x)
    out = nnx.eval_shape(lambda m, x, z: m(x, jax.numpy.zeros((2,), jax.numpy.int32), z), model, x, z)
    assert z.shape == (2, c.model.z_channels) and out.shape == (2, s, s, 3)
    if variant in ("cpu", "ref"):
        assert c.mouth_weight > 1 and c.prediction == "v"


def test_learning_rate_schedules_by_hand():
    from daetalker_jax.errors import UserError
    from daetalker_jax.trainers.base import learning_rate

    c = _config("unused", learning_rate=1e-3, num_steps=1000)
    assert learning_rate(c) == 1e-3                                   # the default: constant, no warm-up
    c.warmup_steps = 100
    warm = learning_rate(c)
    assert np.allclose([warm(0), warm(50), warm(100), warm(999)], [0, 5e-4, 1e-3, 1e-3])
    c.lr_schedule = "cosine"
    cos = learning_rate(c)                  # warm-up, then half a cosine from 1e-3 at step 100 to 0 at 1000
    assert np.allclose([cos(50), cos(100), cos(550), cos(1000)], [5e-4, 1e-3, 5e-4, 0], atol=1e-9)
    c.warmup_steps = 0
    assert np.allclose([learning_rate(c)(0), learning_rate(c)(500)], [1e-3, 5e-4])
    for bad in (dict(lr_schedule="linear"), dict(lr_schedule="cosine", warmup_steps=1000), dict(warmup_steps=-1)):
        with pytest.raises(UserError):
            learning_rate(_config("unused", num_steps=1000, **bad))
