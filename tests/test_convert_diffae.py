"""Official DiffAE weights load into our model and give the official outputs.

tests/data/diffae_golden.npz was made once, outside this repository, with the official phizaz/diffae
code (commit 00c57d3, PyTorch 2.13 CPU): a BeatGANsAutoencConfig(image_size=32, model_channels=32,
channel_mult=(1, 1), enc_channel_mult=(1, 1), num_res_blocks=1, enc_num_res_block=1, embed_channels=32,
enc_out_channels=32, attention_resolutions=(16,), resnet_two_cond=True, resblock_updown=True) with
torch.manual_seed(0), every parameter perturbed by 0.05 * N(0, 1) (so the zero-initialised layers
matter) and rounded to fp16 (stored exactly as fp16 in the file); in eval mode it encoded x0
(`cond` = model.encoder(x0)) and predicted eps for (xt, t) with x_start=x0 (`pred`). Arrays are NHWC.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import dae
from daetalker_jax.convert_diffae import convert_state_dict, load_official, save_params
from daetalker_jax.errors import UserError
from daetalker_jax.models.unet import DiffAE, DiffAEConfig
from daetalker_jax.trainers.base import Trainer
from daetalker_jax.trainers.dae import DAETask

GOLDEN = Path(__file__).parent / "data" / "diffae_golden.npz"
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
