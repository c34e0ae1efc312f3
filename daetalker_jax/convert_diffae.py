"""`python -m daetalker_jax.convert_diffae --ckpt last.ckpt --out DIR`: official DiffAE weights -> ours.

Reads a phizaz/diffae autoencoder checkpoint (the PyTorch Lightning `last.ckpt` its training writes: EMA
or raw weights; read without torch) or an `.npz` of its state dict, maps every tensor onto our NNX
parameters (NCHW/OIHW -> NHWC/HWIO, Linear and 1x1 Conv1d -> (in, out)), and saves them as an orbax
checkpoint that the trainer starts from with `--config.init_from=DIR`. A tensor that has no place in our
model is an error, not silently dropped; only the latent DPM of the official latent-diffusion checkpoints
(`latent_net.*`, not part of DAE-Talker) is left out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from flax import nnx

from daetalker_jax.errors import HelpFormatter, UserError, run_cli
from daetalker_jax.models.torch_zip import read_torch_zip
from daetalker_jax.models.unet import DiffAE, DiffAEConfig

PRESETS = {
    "ffhq128": DiffAEConfig(),
    "ffhq256": DiffAEConfig(image_size=256, channel_mult=(1, 1, 2, 2, 4, 4), enc_channel_mult=(1, 1, 2, 2, 4, 4, 4)),
}


IGNORED = ("latent_net.",)


class _Source(dict):
    """The official state dict, remembering which tensors were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, name: str) -> np.ndarray:
        self.read.add(name)
        return super().__getitem__(name)


def _tensor(src: _Source, name: str) -> np.ndarray:
    if name not in src:
        raise UserError(f"the checkpoint has no tensor {name!r}: is it an official DiffAE autoencoder of this size?")
    w = np.asarray(src[name], np.float32)
    if w.ndim == 4:                  # Conv2d OIHW -> HWIO
        return w.transpose(2, 3, 1, 0)
    if w.ndim == 3:                  # Conv1d (O, I, 1) used as a linear map
        return w[..., 0].T
    if w.ndim == 2:                  # Linear (O, I) -> (I, O)
        return w.T
    return w


def _dense(src, name, as_linear: bool = False):
    """Conv or Linear weights; `as_linear` turns a 1x1 Conv2d into our Linear's (in, out) kernel."""
    kernel = _tensor(src, f"{name}.weight")
    return {"kernel": kernel[0, 0] if as_linear else kernel, "bias": _tensor(src, f"{name}.bias")}


def _norm(src, name):
    return {"norm": {"scale": _tensor(src, f"{name}.weight"), "bias": _tensor(src, f"{name}.bias")}}


def _resblock(src, name, ours: dict) -> dict:
    out = {"in_norm": _norm(src, f"{name}.in_layers.0"), "in_conv": _dense(src, f"{name}.in_layers.2")}
    if "emb" in ours:
        out |= {"emb": _dense(src, f"{name}.emb_layers.1"), "cond": _dense(src, f"{name}.cond_emb_layers.1"),
                "out_norm": _norm(src, f"{name}.out_layers.0"), "out_conv": _dense(src, f"{name}.out_layers.3")}
    if ours.get("skip") is not None:
        out["skip"] = _dense(src, f"{name}.skip_connection")
    return out


def _attention(src, name):
    return {"norm": _norm(src, f"{name}.norm"), "qkv": _dense(src, f"{name}.qkv"),
            "proj": _dense(src, f"{name}.proj_out")}


def _stage(src, name, ours: dict) -> dict:
    """One official TimestepEmbedSequential: ResBlock, then attention and/or an up-ResBlock."""
    out, i = {"res": _resblock(src, f"{name}.0", ours["res"])}, 1
    if ours.get("attn") is not None:
        out["attn"], i = _attention(src, f"{name}.{i}"), i + 1
    if ours.get("up") is not None:
        out["up"] = _resblock(src, f"{name}.{i}", ours["up"])
    return out


def _half(src, prefix: str, ours: dict, stages_key: str) -> dict:
    out = {"conv_in": _dense(src, f"{prefix}input_blocks.0.0"),
           stages_key: {k: _stage(src, f"{prefix}input_blocks.{k + 1}", s) for k, s in ours[stages_key].items()},
           "middle": {0: _resblock(src, f"{prefix}middle_block.0", ours["middle"][0]),
                      1: _attention(src, f"{prefix}middle_block.1"),
                      2: _resblock(src, f"{prefix}middle_block.2", ours["middle"][2])}}
    return out


def convert_state_dict(src: dict[str, np.ndarray], cfg: DiffAEConfig) -> dict:
    """Official autoencoder state dict (names without the 'model.'/'ema_model.' prefix) -> our Params."""
    abstract = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: DiffAE(cfg, rngs=nnx.Rngs(0))), nnx.Param))
    src = _Source(src)
    unet = _half(src, "", abstract["unet"], "stages_in")
    unet |= {"time1": _dense(src, "time_embed.time_embed.0"), "time2": _dense(src, "time_embed.time_embed.2"),
             "stages_out": {k: _stage(src, f"output_blocks.{k}", s) for k, s in abstract["unet"]["stages_out"].items()},
             "out_norm": _norm(src, "out.0"), "out_conv": _dense(src, "out.2")}
    encoder = _half(src, "encoder.", abstract["encoder"], "stages")
    encoder |= {"out_norm": _norm(src, "encoder.out.0"), "out": _dense(src, "encoder.out.3", as_linear=True)}
    params = {"unet": unet, "encoder": encoder}
    _check_shapes(params, abstract)
    unused = sorted(k for k in src.keys() - src.read if not k.startswith(IGNORED))
    if unused:
        raise UserError(f"the checkpoint has tensors this model has no place for ({len(unused)}: "
                        f"{', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''}); choose the --preset that "
                        "matches the checkpoint")
    return params


def _check_shapes(ours: dict, abstract: dict, path: str = "") -> None:
    for k, v in abstract.items():
        if isinstance(v, dict):
            _check_shapes(ours[k], v, f"{path}{k}.")
        elif ours[k].shape != v.shape:
            raise UserError(f"{path}{k}: checkpoint shape {ours[k].shape} != model shape {v.shape}; "
                            "choose the --preset that matches the checkpoint")


def load_official(path: Path, weights: str = "ema") -> dict[str, np.ndarray]:
    """The autoencoder's state dict from a Lightning .ckpt (`ema_model.*` or `model.*`) or from an .npz
    with 'state/<name>' arrays."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    if path.suffix == ".npz":
        with np.load(path) as z:
            return {k.removeprefix("state/"): z[k] for k in z.files if k.startswith("state/")}
    ckpt = read_torch_zip(path, foreign=True)   # Lightning pickles its callbacks' classes: stand-ins
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    prefix = {"ema": "ema_model.", "raw": "model."}[weights]
    picked = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and isinstance(v, np.ndarray)}
    if not picked:
        raise UserError(f"{path} has no '{prefix}*' tensors; is it a DiffAE autoencoder checkpoint?")
    return picked


def save_params(params: dict, out: Path) -> None:
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out.absolute(), params, force=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m daetalker_jax.convert_diffae", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--ckpt", type=Path, required=True, help="official last.ckpt (or a state-dict .npz); torch is "
                   "not needed")
    p.add_argument("--out", type=Path, required=True, help="output orbax checkpoint folder")
    p.add_argument("--preset", choices=sorted(PRESETS), default="ffhq256",
                   help="the official autoencoder's layout the checkpoint was trained with (its image size)")
    p.add_argument("--weights", choices=("ema", "raw"), default="ema",
                   help="which weights of the checkpoint: its EMA (what the official code samples with) or the raw "
                        "trained ones")
    args = p.parse_args(argv)
    params = convert_state_dict(load_official(args.ckpt, args.weights), PRESETS[args.preset])
    save_params(params, args.out)
    print(f"saved {args.preset} {args.weights} weights to {args.out}; train from them with "
          f"--config configs/dae.py:{args.preset.removeprefix('ffhq')} --config.init_from={args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
