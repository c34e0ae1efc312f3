"""The audio-visual sync expert for LSE-D / LSE-C (trainers/sync.py, metrics/syncnet.py). Hyper-parameters
are ours unless marked: 5-frame (0.2 s) windows and negatives shifted by >= 5 frames (SyncNet / Wav2Lip
expert), offsets searched over +-15 frames (Wav2Lip's LSE protocol), Adam 1e-4 (Wav2Lip expert), batch 64
(Wav2Lip expert), 48x96 mouth crops (SyncNet's lower-face input, in our aspect).

Variants (`--config configs/sync.py:<variant>`): default, tiny (CPU tests).
"""

import ml_collections

from daetalker_jax.trainers import TRAINER_DEFAULTS


VARIANTS = ("default", "tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in VARIANTS:
        raise ValueError(f"unknown sync variant {variant!r}; choose {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.task = "sync"
    c.variant = variant
    c.data_dir = "runs/default/data"   # prepared; mouth crops are extracted beside it on first use
    c.split = "train"
    c.update(TRAINER_DEFAULTS)
    c.mouth_size = (48, 96)            # (height, width) of the lower half of the face crop
    c.model = ml_collections.ConfigDict(dict(widths=(64, 128, 256, 256), hidden=512, embed_dim=512))
    c.min_shift = 5                    # negatives: the same clip's audio shifted by min..max frames
    c.max_shift = 15                   # also the LSE offset search range in samples
    c.batch_size = 64                  # global, over all devices of all processes
    c.learning_rate = 1e-4
    c.ema_decay = 0.999
    c.num_steps = 50_000
    c.data_workers = 2
    c.sample_every = 1000              # held-out clip: shift accuracy, LSE, distance-vs-offset plot; 0 disables
    if variant == "tiny":
        c.mouth_size = (24, 48)
        c.model.update(widths=(8, 16, 16), hidden=32, embed_dim=32)
        c.batch_size, c.num_steps, c.data_workers = 16, 20, 0
        c.learning_rate, c.ema_decay = 3e-3, 0.9
        c.log_every, c.checkpoint_every, c.sample_every = 1, 10, 10
    return c
