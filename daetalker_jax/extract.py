"""`python -m daetalker_jax.extract --data DATA --dae RUN [--speech-model HF_DIR]`: speech2latent's inputs."""

from __future__ import annotations

import argparse
from pathlib import Path

from daetalker_jax.errors import HelpFormatter, UserError, run_cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m daetalker_jax.extract",
        description="Store stage-2 training inputs beside a prepared dataset: the latents of every frame from a "
                    "trained DiffAE's frozen EMA encoder (with their mean/std for z-normalisation) and, optionally, "
                    "the hidden states of a local wav2vec 2.0 / HuBERT checkpoint. Uses all devices; resumable; "
                    "multi-host: run the same command on every host.",
        formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset folder made by `python -m daetalker_jax.prepare`")
    p.add_argument("--dae", type=Path, help="the --workdir of a finished DiffAE training run")
    p.add_argument("--speech-model", type=Path,
                   help="a local Hugging Face wav2vec 2.0 or HuBERT folder (config.json + model.safetensors or "
                        "pytorch_model.bin) whose features speech2latent should use (`--config.features=speech`)")
    p.add_argument("--batch-size", type=int, default=256, help="frames encoded at once (over all local devices)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dae is None and args.speech_model is None:
        raise UserError("nothing to extract: give --dae RUN (latents) and/or --speech-model HF_DIR (speech features)")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    from daetalker_jax import distributed
    from daetalker_jax.data import extract

    distributed.initialize()
    if args.dae is not None:
        meta = extract.extract_latents(args.dae, args.data, batch_size=args.batch_size)
        print(f"latents: {sum(len(v) for v in meta['clips'].values())} clips, z of size {meta['latent_dim']} "
              f"(DiffAE step {meta['step']}) in {args.data}")
    if args.speech_model is not None:
        meta = extract.extract_speech(args.speech_model, args.data)
        print(f"speech features: {meta['model_type']}, {meta['layers']} layers x {meta['hidden_size']} "
              f"for {sum(len(v) for v in meta['clips'].values())} clips in {args.data}")
    return 0


if __name__ == "__main__":
    run_cli(main)
