"""Training tasks on the shared trainer (trainers/base.py): the DiffAE (stage 1) and speech2latent (stage 2)."""

from __future__ import annotations

import ml_collections

from daetalker_jax.errors import UserError


def make_task(config: ml_collections.ConfigDict):
    """The task a config names in `config.task`."""
    if config.task == "dae":
        from daetalker_jax.trainers.dae import DAETask

        return DAETask(config)
    if config.task == "s2l":
        from daetalker_jax.trainers.s2l import S2LTask

        return S2LTask(config)
    raise UserError(f"unknown task {config.task!r} in the config; use configs/dae.py or configs/s2l.py")
