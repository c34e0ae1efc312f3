"""Training tasks on the shared trainer (trainers/base.py): the DiffAE (stage 1), speech2latent (stage 2) and
the lip-sync expert for LSE (sync)."""

from __future__ import annotations

import ml_collections

from daetalker_jax.errors import UserError

# The trainer's bookkeeping, the same for every stage (configs/*.py start from it): gradient clipping, the
# learning-rate schedule (constant or cosine, optional linear warm-up: trainers/base.py `learning_rate`), seed,
# warm start (`init_from`: an orbax Param tree, e.g. from `python -m daetalker_jax.convert_diffae`), logging and
# checkpoint cadence; `pack_state` (auto|on|off): the train state as flat buffers between steps (trainers/packing.py);
# `ema_warmup`: the EMA decay ramps up as min(ema_decay, (1 + t) / (10 + t)) (trainers/base.py `ema_decay_at`).
TRAINER_DEFAULTS = dict(grad_clip=1.0, lr_schedule="constant", warmup_steps=0, seed=0, init_from="", log_every=50,
                        checkpoint_every=2000, keep_checkpoints=3, pack_state="auto", ema_warmup=True)


def make_task(config: ml_collections.ConfigDict):
    """The task a config names in `config.task`."""
    if config.task == "dae":
        from daetalker_jax.trainers.dae import DAETask

        return DAETask(config)
    if config.task == "s2l":
        from daetalker_jax.trainers.s2l import S2LTask

        return S2LTask(config)
    if config.task == "sync":
        from daetalker_jax.trainers.sync import SyncTask

        return SyncTask(config)
    raise UserError(f"unknown task {config.task!r} in the config; use configs/dae.py, configs/s2l.py or "
                    "configs/sync.py")
