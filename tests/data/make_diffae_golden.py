"""Writes the DiffAE conversion golden files from the official phizaz/diffae code.

Run once by hand, outside the test suite (tests never import this file; it needs torch, which the project
itself does not, and a checkout of the official code):
`python tests/data/make_diffae_golden.py --diffae /path/to/phizaz/diffae`. Last run with PyTorch 2.14.1
CPU, numpy 2.4, phizaz/diffae commit 00c57d3f626f28bf9ed8aff58d90baab25de3af4. It writes

- tests/data/diffae_golden.npz: a small BeatGANsAutoencConfig (TINY below) built after
  torch.manual_seed(0), every parameter perturbed by 0.05 * N(0, 1) (so the zero-initialised layers matter)
  and rounded to fp16, stored as fp16 under `state/<name>`; then, drawing on from the same generator,
  x0 = U(-1, 1) and xt = N(0, 1) of shape (2, 3, 32, 32), t = [17, 803], and in eval mode
  `cond` = model.encoder(x0) and `pred` = model(xt, t, x_start=x0).pred. Images are stored NHWC.
- tests/data/diffae_tiny.ckpt: that model as the official training's PyTorch Lightning 1.4.5 `last.ckpt`
  holds it (torch.save, zip format): `ema_model.<name>` are exactly the npz's fp16 weights, `model.<name>`
  a different perturbation (seed 1), then the LitModel's `x_T` buffer; top-level keys as PL 1.4's
  dump_checkpoint writes with precision=16 (the templates set fp16=True): epoch, global_step,
  pytorch-lightning_version, state_dict, callbacks, optimizer_states, lr_schedulers,
  native_amp_scaling_state, hparams_name (None: LitModel passes save_hyperparameters a dict, which matches
  no __init__ argument), hyper_parameters. PL 1.4 keys `callbacks` by the callback's class, so the file
  references the global pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint, as real checkpoints
  do: reading it with torch.load(weights_only=False) needs that name importable (a stub is enough).
  Weights are fp16 (real checkpoints hold fp32) and the optimizer state covers two tensors, to keep it small.
- tests/data/diffae_official_layout.json: for the released ffhq128 and ffhq256 autoencoders, the model
  config, every tensor name and shape of the autoencoder's state dict (LitModel's `model`, no prefix) in
  state-dict order, and the parameter count; built on the meta device, so nothing is allocated.

The official templates.py/config.py import pytorch_lightning, lmdb, torchvision etc., so only model/ is
imported; the configs are written out here by hand from templates.ffhq128_autoenc_130M and
templates.ffhq256_autoenc as TrainConfig.make_model_conf turns them into a BeatGANsAutoencConfig.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

DATA = Path(__file__).parent
# enc_pool: the dataclass default 'depthconv' is not implemented; every template sets 'adaptivenonzero'.
TINY = dict(image_size=32, model_channels=32, channel_mult=(1, 1), enc_channel_mult=(1, 1), num_res_blocks=1,
            enc_num_res_block=1, embed_channels=32, enc_out_channels=32, attention_resolutions=(16,),
            resnet_two_cond=True, resblock_updown=True, enc_pool="adaptivenonzero")
# TrainConfig.make_model_conf's fixed arguments and autoenc_base's values (net_attn, heads, embed, style_ch...).
_BASE = dict(conv_resample=True, dims=2, dropout=0.1, in_channels=3, out_channels=3, num_classes=None,
             num_head_channels=-1, num_heads_upsample=-1, num_heads=1, num_res_blocks=2, num_input_res_blocks=None,
             resblock_updown=True, use_checkpoint=False, use_new_attention_order=False, resnet_two_cond=True,
             resnet_use_zero_module=True, latent_net_conf=None, resnet_cond_channels=None,
             attention_resolutions=(16,), embed_channels=512, enc_out_channels=512, enc_pool="adaptivenonzero",
             enc_num_res_block=2, enc_grad_checkpoint=False, enc_attn_resolutions=None, model_channels=128)
OFFICIAL = {
    "ffhq128": dict(_BASE, image_size=128, channel_mult=(1, 1, 2, 3, 4), enc_channel_mult=(1, 1, 2, 3, 4, 4)),
    "ffhq256": dict(_BASE, image_size=256, channel_mult=(1, 1, 2, 2, 4, 4), enc_channel_mult=(1, 1, 2, 2, 4, 4, 4)),
}
LIGHTNING_MODULES = ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint")


def perturbed_model(config_cls: type, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = config_cls(**TINY).make_model()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
            p.copy_(p.half().float())  # the fp32 reference then uses exactly the stored fp16 weights
    return model.eval()


@contextlib.contextmanager
def lightning_names() -> Iterator[type]:
    """A stand-in ModelCheckpoint under its real module path, so pickle writes the global real files name."""
    saved = {n: sys.modules.get(n) for n in LIGHTNING_MODULES}
    mods = [types.ModuleType(n) for n in LIGHTNING_MODULES]
    cls = type("ModelCheckpoint", (), {"__module__": LIGHTNING_MODULES[-1]})
    mods[0].callbacks, mods[1].model_checkpoint, mods[2].ModelCheckpoint = mods[1], mods[2], cls
    sys.modules.update(zip(LIGHTNING_MODULES, mods))
    try:
        yield cls
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n)
            else:
                sys.modules[n] = m


def golden(config_cls: type) -> tuple[dict[str, np.ndarray], torch.nn.Module]:
    model = perturbed_model(config_cls, 0)
    out = {}
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    xt = torch.randn(2, 3, 32, 32)
    t = torch.tensor([17, 803])
    with torch.no_grad():
        cond = model.encoder(x0)
        pred = model(xt, t, x_start=x0).pred
    nhwc = lambda a: np.ascontiguousarray(a.numpy().transpose(0, 2, 3, 1))  # noqa: E731
    out.update(x0=nhwc(x0), xt=nhwc(xt), t=t.numpy(), cond=cond.numpy(), pred=nhwc(pred))
    out.update({f"state/{k}": v.half().numpy() for k, v in model.state_dict().items()})
    return out, model


def lightning_checkpoint(config_cls: type, ema: torch.nn.Module, model_checkpoint: type) -> dict[str, Any]:
    raw = perturbed_model(config_cls, 1)
    # LitModel registers model, then ema_model (a deepcopy), then the x_T buffer: that is state-dict order.
    state = OrderedDict((f"model.{k}", v.half()) for k, v in raw.state_dict().items())
    state.update((f"ema_model.{k}", v.half()) for k, v in ema.state_dict().items())
    state["x_T"] = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))  # fp32, as registered
    first = list(raw.parameters())[:2]  # a couple of small tensors stand for the whole Adam state
    adam = {"state": {i: {"step": 1200, "exp_avg": 1e-3 * torch.randn_like(p),
                          "exp_avg_sq": 1e-6 * torch.rand_like(p)} for i, p in enumerate(first)},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0, "amsgrad": False,
                              "params": list(range(len(list(raw.parameters()))))}]}
    hparams = dict(seed=0, batch_size=32, lr=1e-4, fp16=True, ema_decay=0.9999, img_size=32, sample_size=2,
                   T=1000, T_eval=20, name="diffae_tiny", model_conf=config_cls(**TINY).as_dict_jsonable())
    return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.4.5", "state_dict": state,
            "callbacks": {model_checkpoint: {"monitor": None, "best_model_score": None, "best_model_path": "",
                                             "current_score": None, "dirpath": "checkpoints/diffae_tiny"}},
            "optimizer_states": [adam], "lr_schedulers": [],
            "native_amp_scaling_state": {"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                         "growth_interval": 2000, "_growth_tracker": 152},
            "hparams_name": None, "hyper_parameters": hparams}


def layout(config_cls: type) -> str:
    """One line per tensor, so the file stays small and diffs readably."""
    parts = []
    for name, values in OFFICIAL.items():
        conf = config_cls(**values)
        with torch.device("meta"):
            sd = conf.make_model().state_dict()
        tensors = ",\n".join(f"      {json.dumps(k)}: {json.dumps(list(v.shape))}" for k, v in sd.items())
        parts.append(f'  "{name}": {{\n    "config": {json.dumps(conf.as_dict_jsonable())},\n'
                     f'    "num_params": {sum(v.numel() for v in sd.values())},\n'
                     f'    "state_dict": {{\n{tensors}\n    }}\n  }}')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--diffae", type=Path, required=True, help="checkout of github.com/phizaz/diffae")
    p.add_argument("--out", type=Path, default=DATA, help="where to write (default: tests/data)")
    args = p.parse_args()
    sys.path.insert(0, str(args.diffae.resolve()))  # the official code imports `choices`, `model` top-level
    from model.unet_autoenc import BeatGANsAutoencConfig

    arrays, ema = golden(BeatGANsAutoencConfig)
    np.savez_compressed(args.out / "diffae_golden.npz", **arrays)
    with lightning_names() as model_checkpoint:
        torch.save(lightning_checkpoint(BeatGANsAutoencConfig, ema, model_checkpoint), args.out / "diffae_tiny.ckpt")
        back = torch.load(args.out / "diffae_tiny.ckpt", map_location="cpu", weights_only=False)
    (args.out / "diffae_official_layout.json").write_text(layout(BeatGANsAutoencConfig))

    # The checkpoint's EMA weights are the npz's bit for bit; its raw weights are another model.
    sd = back["state_dict"]
    for k, v in arrays.items():
        if k.startswith("state/"):
            name = k.removeprefix("state/")
            assert np.array_equal(sd[f"ema_model.{name}"].numpy().view(np.uint16), v.view(np.uint16)), name
            assert not torch.equal(sd[f"model.{name}"], sd[f"ema_model.{name}"]), name
    for name in ("diffae_golden.npz", "diffae_tiny.ckpt", "diffae_official_layout.json"):
        print(f"{name}: {(args.out / name).stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
