"""The official PyTorch DiffAE (phizaz/diffae) timed on this machine: the anchors bench/dae.py divides by.

The issue counts the ratio to the official code measured in the same run (the GPU machines are shared and their
absolute speed moves). Needs torch and a copy of the official code (its model/, choices.py and config_base.py; the
rest of that repository is not imported) in a scratch folder given by --code; nothing of it is part of this project.

Run (GPU machine): python bench/official.py --code /scratch/diffae --sizes 128 256 --train-batch 64 24
    [--ddim-batch 50 100 200]
Training step: encoder + UNet forward/backward with the DDPM eps loss, fp16 autocast + GradScaler, Adam, grad-norm
clip 1 (what the official FFHQ configs run: Lightning precision 16), eager; its per-step EMA is left out, as in
the anchors (so the ratio against our step, which includes the EMA, is conservative). On an 80 GB H100 it runs out of
memory at batch 128 at 128 px (64 fits) and at 32 at 256 px (24 fits): such a batch is recorded as null in the JSON
and OOM in the table, not as an error. DDIM step: one UNet forward at a given z_sem, bf16 autocast + torch.compile
(the fastest way to run the official network we know), at each --ddim-batch: per image it gets faster with the batch
(128 px on an H100: 1,280-1,590 img/s at 50, 1,676-1,716 at 100, 1,769-1,786 at 200), so a ratio means something only
between equal batches. Each measurement starts from a fresh torch.compile state: a second shape compiled in the same
process is recompiled with dynamic shapes and runs much slower (256 px after 128 px: 248 img/s instead of 461, which is
where the anchor's 247 came from).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import torch

# The official FFHQ autoencoder configs (templates.py: ffhq128_autoenc_base, ffhq256_autoenc)
CONFIGS = {128: {"channel_mult": (1, 1, 2, 3, 4), "enc_channel_mult": (1, 1, 2, 3, 4, 4)},
           256: {"channel_mult": (1, 1, 2, 2, 4, 4), "enc_channel_mult": (1, 1, 2, 2, 4, 4, 4)}}


def official_model(size: int, device: str) -> torch.nn.Module:
    from model.unet_autoenc import BeatGANsAutoencConfig   # from --code

    conf = BeatGANsAutoencConfig(
        image_size=size, in_channels=3, model_channels=128, out_channels=3, num_res_blocks=2, embed_channels=512,
        attention_resolutions=(16,), dropout=0.1, conv_resample=True, dims=2, num_heads=1, num_head_channels=-1,
        resblock_updown=True, resnet_two_cond=True, resnet_use_zero_module=True, enc_out_channels=512,
        enc_pool="adaptivenonzero", enc_num_res_block=2, **CONFIGS[size])
    return conf.make_model().to(device)


def _median_seconds(fn, iters: int, device: str) -> float:
    """Median seconds of one call after two warm-up calls (compilation, cuDNN autotuning)."""
    times = []
    for i in range(iters + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def train_ips(size: int, batch: int, iters: int, device: str) -> float:
    model = official_model(size, device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device, enabled=device == "cuda")
    x0 = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    betas = torch.linspace(1e-4, 0.02, 1000, device=device, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float()

    def step():
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(x0)
        a = abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with torch.autocast(device, dtype=torch.float16, enabled=device == "cuda"):
            eps = model(x_t, t, x_start=x0).pred
            loss = torch.nn.functional.mse_loss(eps.float(), noise)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()

    return batch / _median_seconds(step, iters, device)


def ddim_ips(size: int, batch: int, iters: int, device: str, compile_model: bool) -> float:
    model = official_model(size, device).eval()
    torch._dynamo.reset()   # each batch compiled afresh for its static shapes (no dynamic-shape recompilation)
    net = torch.compile(model, dynamic=False) if compile_model else model
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    cond = torch.randn(batch, 512, device=device)

    @torch.inference_mode()
    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            return net(x, t, cond=cond).pred

    return batch / _median_seconds(step, iters, device)


def _unless_oom(measure, *args) -> float | None:
    """The measurement, or None when the official code does not fit the GPU at this batch (a result, not a failure:
    bench/dae.py then reports the batch as out of the official code's reach)."""
    try:
        return measure(*args)
    except torch.OutOfMemoryError:
        pass
    gc.collect()   # outside the except clause, so the failed step's frames (and tensors) are gone
    torch.cuda.empty_cache()
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--code", required=True, help="folder with the official model/, choices.py, config_base.py")
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256], choices=sorted(CONFIGS))
    p.add_argument("--train-batch", type=int, nargs="+", default=[64, 24],
                   help="per size (0: skip training); default: the largest batches tried that fit on an 80 GB H100, as "
                   "bench/dae.py's default (the anchors timed 32 / 16)")
    p.add_argument("--ddim-batch", type=int, nargs="+", default=[50],
                   help="one measurement each (the official code is faster per image at larger batches, so compare "
                   "equal batches); 0: skip the DDIM step")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="DDIM step eager (torch.compile needs a C compiler)")
    p.add_argument("--json", help="also write the numbers here (bench/dae.py reads them)")
    args = p.parse_args()
    if len(args.train_batch) != len(args.sizes):
        p.error(f"--train-batch needs one value per size ({len(args.sizes)}), got {len(args.train_batch)}")
    missing = [f for f in ("model/unet_autoenc.py", "choices.py", "config_base.py")
               if not os.path.isfile(os.path.join(args.code, f))]
    if missing:
        p.error(f"--code {args.code}: missing {', '.join(missing)}; copy model/, choices.py and config_base.py of "
                "a phizaz/diffae checkout there")
    sys.path.insert(0, args.code)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"official DiffAE, torch {torch.__version__}, {name}")
    print("| size | params | train batch | train img/s (fp16 AMP eager) | DDIM batch | DDIM img/s (bf16"
          f"{'' if args.no_compile else ' + torch.compile'}) |\n" + "|---" * 6 + "|")
    results = {}
    for size, batch in zip(args.sizes, args.train_batch):
        params = sum(p.numel() for p in official_model(size, "cpu").parameters())
        train = _unless_oom(train_ips, size, batch, args.iters, device) if batch else None
        ddim = {b: _unless_oom(ddim_ips, size, b, args.iters, device, not args.no_compile)
                for b in args.ddim_batch if b}
        results[size] = {"params": params, "train_batch": batch, "train": train, "ddim": ddim, "device": name,
                         "torch": torch.__version__}
        fmt = lambda b, v: "-" if not b else "OOM" if v is None else f"{v:.0f}"  # noqa: E731
        for b in ddim or [0]:
            print(f"| {size} | {params / 1e6:.1f} M | {batch} | {fmt(batch, train)} | {b or '-'} | "
                  f"{fmt(b, ddim.get(b))} |", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
