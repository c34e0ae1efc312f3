"""Official DiffAE weights load into our model and give the official outputs.

The golden files come from the official phizaz/diffae code through tests/data/make_diffae_golden.py (run by
hand where torch and that code exist; its docstring says exactly what each file holds):
- diffae_golden.npz: a small official autoencoder's perturbed fp16 weights, inputs and its outputs;
- diffae_tiny.ckpt: the same weights as the official training's Lightning `last.ckpt` holds them
  (`ema_model.*` = the npz's, `model.*` another perturbation, an `x_T` buffer, callbacks keyed by class);
- diffae_official_layout.json: every tensor name and shape of the released ffhq128 and ffhq256 autoencoders.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dae
from daetalker_jax.convert_diffae import PRESETS, convert_state_dict, load_official, main, save_params
from daetalker_jax.errors import UserError
from daetalker_jax.models.unet import DiffAE, DiffAEConfig
from daetalker_jax.trainers.base import Trainer
from daetalker_jax.trainers.dae import DAETask

DATA = Path(__file__).parent / "data"
GOLDEN, CKPT, LAYOUT = DATA / "diffae_golden.npz", DATA / "diffae_tiny.ckpt", DATA / "diffae_official_layout.json"
CFG = DiffAEConfig(image_size=32, model_channels=32, channel_mult=(1, 1), enc_channel_mult=(1, 1), num_res_blocks=1,
                   attention_resolutions=(16,), embed_channels=32, z_channels=32, dtype="float32")


def _converted_model() -> DiffAE:
    model = DiffAE(CFG, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(params, convert_state_dict(load_official(GOLDEN), CFG))
    nnx.update(model, params)
    model.eval()
    return model


def test_converted_weights_reproduce_the_official_outputs():
    golden = np.load(GOLDEN)
    model = _converted_model()
    z = model.encode(jnp.asarray(golden["x0"]))
    eps = model(jnp.asarray(golden["xt"]), jnp.asarray(golden["t"]), z)
    rel = lambda a, b: float(jnp.abs(a - b).max() / np.abs(b).max())  # noqa: E731
    assert rel(z, golden["cond"]) < 1e-4 and rel(eps, golden["pred"]) < 1e-4


def test_a_mismatched_size_is_a_clear_error():
    other = DiffAEConfig(**{**CFG.__dict__, "channel_mult": (1, 2)})
    with pytest.raises(UserError, match="DiffAE autoencoder of this size|shape"):
        convert_state_dict(load_official(GOLDEN), other)
    result = subprocess.run([sys.executable, "-m", "daetalker_jax.convert_diffae", "--ckpt", "missing.ckpt", "--out",
                             "x"], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2 and "missing.ckpt does not exist" in result.stderr


def test_trainer_starts_from_converted_weights(tiny_dataset32, tmp_path):
    save_params(convert_state_dict(load_official(GOLDEN), CFG), tmp_path / "converted")
    c = dae.get_config("tiny")
    c.data_dir, c.init_from = str(tiny_dataset32), str(tmp_path / "converted")
    c.model.update({k: v for k, v in CFG.__dict__.items() if k in c.model})
    trainer = Trainer(c, tmp_path / "run", DAETask(c),
                      mesh=jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,)))
    expected = nnx.to_pure_dict(nnx.state(_converted_model(), nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(nnx.to_pure_dict(trainer.ema)), expected)


def test_the_official_ckpt_reads_without_torch():
    """The Lightning checkpoint gives the EMA weights (bit for bit the npz's) or the raw ones, without importing
    torch or the framework classes it pickles (its callbacks are keyed by pytorch_lightning's ModelCheckpoint)."""
    ema, raw = load_official(CKPT, "ema"), load_official(CKPT, "raw")
    golden = load_official(GOLDEN)
    assert list(ema) == list(golden) and set(raw) == set(golden)   # no x_T buffer, no prefixes left
    for name, value in golden.items():
        assert ema[name].dtype == value.dtype == np.float16
        np.testing.assert_array_equal(ema[name], value)
        assert not np.array_equal(raw[name], value), name
    assert "torch" not in sys.modules and "pytorch_lightning" not in sys.modules
    model = _converted_model()   # and the EMA weights convert as the npz's do
    params = jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    jax.tree.map(np.testing.assert_array_equal, convert_state_dict(ema, CFG), params)


def _numbered(layout: dict, dtype=np.float32) -> dict[str, np.ndarray]:
    """The official layout with tensor k filled with the value k + 1: where each lands can be read back."""
    return {name: np.full(shape, k + 1, dtype) for k, (name, shape) in enumerate(layout["state_dict"].items())}


def _check_one_to_one(params: dict, layout: dict) -> None:
    """Every official tensor fills exactly one of our parameters, whole, and together they are all of ours."""
    leaves = jax.tree.leaves(params)
    values = [float(np.asarray(leaf).flat[0]) for leaf in leaves]
    assert all(np.all(np.asarray(leaf) == v) for leaf, v in zip(leaves, values, strict=True))
    assert sorted(values) == list(range(1, len(layout["state_dict"]) + 1))
    assert sum(np.size(leaf) for leaf in leaves) == layout["num_params"]


def test_the_ffhq256_layout_converts_one_to_one():
    layout = json.loads(LAYOUT.read_text())["ffhq256"]
    assert PRESETS["ffhq256"].image_size == layout["config"]["image_size"] == 256
    _check_one_to_one(convert_state_dict(_numbered(layout), PRESETS["ffhq256"]), layout)


def test_the_cli_converts_an_ffhq128_sized_checkpoint(tmp_path, capsys):
    """`convert_diffae --preset ffhq128` on a state dict of the released ffhq128 autoencoder's size and names
    (fp16 to keep the file at 257 MB): it succeeds and its orbax output holds every tensor, once, in place."""
    import orbax.checkpoint as ocp

    layout = json.loads(LAYOUT.read_text())["ffhq128"]
    src = tmp_path / "ffhq128.npz"
    np.savez(src, **{f"state/{k}": v for k, v in _numbered(layout, np.float16).items()})
    assert main(["--ckpt", str(src), "--out", str(tmp_path / "out"), "--preset", "ffhq128"]) == 0
    assert "configs/dae.py:128" in capsys.readouterr().out
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore((tmp_path / "out").absolute())
    _check_one_to_one(restored, layout)
    first = layout["state_dict"]["input_blocks.0.0.weight"]    # OIHW (128, 3, 3, 3) -> HWIO
    assert restored["unet"]["conv_in"]["kernel"].shape == tuple(first[i] for i in (2, 3, 1, 0))


@pytest.mark.parametrize("extra", ["input_blocks.99.0.in_layers.0.weight", "latent_net.layers.0.weight"])
def test_a_tensor_with_no_place_is_an_error_except_the_latent_dpm(extra):
    src = load_official(GOLDEN) | {extra: np.zeros(4, np.float16)}
    if extra.startswith("latent_net."):
        convert_state_dict(src, CFG)   # the official latent-diffusion checkpoints' DPM: not part of DAE-Talker
    else:
        with pytest.raises(UserError, match=r"no place for \(1: input_blocks.99"):
            convert_state_dict(src, CFG)
