"""Stage 1, the diffusion autoencoder. Defaults follow the official DiffAE FFHQ-128 autoencoder
(PAPER.md section 2): Adam 1e-4, grad-norm clip 1, EMA 0.9999, dropout 0.1, T = 1000, linear betas.

Variants (`--config configs/dae.py:<variant>`): 128 (default), 256 (FFHQ-256 layout), 64, ref (the
10-minute GPU reference run: 128 px, 64 base channels, v prediction, mouth weight), cpu (the main job on a
CPU: 32 px, 16-64 channels, fp32, v prediction, mouth weight 30; 6,000 steps, ~20 minutes on 2 cores), tiny (CPU
tests: 32 px, a few channels, fp32).
"""

import ml_collections

from daetalker_jax.trainers import TRAINER_DEFAULTS

MODELS = {
    "256": dict(image_size=256, model_channels=128, channel_mult=(1, 1, 2, 2, 4, 4),
                enc_channel_mult=(1, 1, 2, 2, 4, 4, 4)),
    "128": dict(image_size=128, model_channels=128, channel_mult=(1, 1, 2, 3, 4), enc_channel_mult=(1, 1, 2, 3, 4, 4)),
    "64": dict(image_size=64, model_channels=64, channel_mult=(1, 2, 4, 8), enc_channel_mult=(1, 2, 4, 8, 8)),
    "ref": dict(image_size=128, model_channels=64, channel_mult=(1, 1, 2, 2, 4), enc_channel_mult=(1, 1, 2, 2, 4, 4)),
    "cpu": dict(image_size=32, model_channels=16, channel_mult=(1, 2, 2, 4), enc_channel_mult=(1, 2, 2, 4, 4),
                embed_channels=128, z_channels=128, dtype="float32", num_res_blocks=1, attention_resolutions=()),
    "tiny": dict(image_size=32, model_channels=32, channel_mult=(1, 2), enc_channel_mult=(1, 2, 2),
                 embed_channels=64, z_channels=32, dtype="float32", num_res_blocks=1),
}


VARIANTS = ("128",) + tuple(k for k in MODELS if k != "128")   # the first is the default


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "128"
    if variant not in VARIANTS:
        raise ValueError(f"unknown dae variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.task = "dae"
    c.variant = variant
    c.data_dir = "runs/default/data"   # made by `python -m daetalker_jax.prepare`
    c.split = "train"
    c.update(TRAINER_DEFAULTS)
    c.model = ml_collections.ConfigDict(dict(num_res_blocks=2, attention_resolutions=(16,), embed_channels=512,
                                             z_channels=512, dropout=0.1, dtype="bfloat16"))
    c.model.update(MODELS[variant])
    c.diffusion_steps = 1000
    c.prediction = "eps"               # DiffAE's; "v" decodes from random x_T after far fewer steps (cpu)
    c.mouth_weight = 1.0               # DiffAE's plain MSE; > 1 weights the mouth region (trainers/dae.py)
    c.batch_size = 64                  # global, over all devices of all processes
    c.learning_rate = 1e-4
    c.ema_decay = 0.9999
    c.num_steps = 200_000
    c.augment = False
    c.data_workers = 4
    c.sample_every = 5000              # EMA reconstructions grid; 0 disables
    c.sample_count = 8
    c.sample_steps = 20                # DDIM steps of the sample grid
    c.invert_steps = 100               # DDIM steps of the inversion x0 -> x_T
    if variant == "ref":               # the 10-minute GPU reference run (launch/reference_run.sh)
        c.batch_size, c.learning_rate, c.ema_decay, c.prediction, c.mouth_weight = 32, 1e-3, 0.999, "v", 30.0
        c.checkpoint_every, c.sample_every = 1000, 0
    if variant == "cpu":               # the main job on a 2-core CPU: ~0.2 s per step (2026-12-07), 6000 steps
        # Found by a sweep (stop-15 note of the generation issue): decoded held-out latents follow the mouth
        # (probe r 0.75 at 2500 steps) only with the mouth weight; lr 2e-3 + weight 30 gets there soonest.
        c.batch_size, c.num_steps, c.data_workers, c.learning_rate, c.ema_decay = 8, 6000, 0, 2e-3, 0.99
        c.prediction, c.mouth_weight = "v", 30.0
        # No dropout and 4,000 steps: that sweep (2,500 steps) ran while dropout drew the same masks every step
        # (until 46c7882). Redrawn each step, and measured as r of the mouth in the DiffAE's own reconstructions
        # against the track (9 test clips, `evaluate`'s lipsync/r_dae), seeds 0 / 1: dropout 0.1 0.15 / 0.24,
        # dropout 0 0.28 / 0.69 at 2,500 steps and 0.76 / 0.85 at 4,000 (stop 25 of the performance issue).
        c.model.dropout = 0.0
        # 6,000 steps: on a corpus half spoken by recorded voices, 4,000 left the mouth out of z (a linear probe read
        # the held-out clips' opening from the encoder's latents with r 0.61; 0.95 after 6,000; bench/RESULTS.md).
        c.log_every, c.checkpoint_every, c.sample_every = 20, 500, 6000
        c.sample_count, c.sample_steps, c.invert_steps = 4, 10, 10
    if variant == "tiny":
        c.model.attention_resolutions = (16,)
        c.batch_size, c.num_steps, c.data_workers = 8, 20, 0
        c.log_every, c.checkpoint_every, c.sample_every = 1, 10, 0
        c.ema_decay = 0.9
        c.sample_count, c.sample_steps, c.invert_steps = 4, 10, 10
    return c
