"""Data-parallel scaling of training on one host: the real Trainer (input pipeline, sharded batch, gradient
all-reduce, EMA) on meshes of 1, 2, 4, ... devices with a fixed batch per device (weak scaling).

Run (a machine with several GPUs; the multi-GPU issue):
  python bench/scaling.py --config configs/dae.py:128 --data runs/default/data --per_device_batch 32
Prints a Markdown table: devices, global batch, img/s, img/s per device, efficiency against 1 device.
On a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/scaling.py --config
configs/dae.py:tiny --data DIR --steps 6` checks that it runs (CPU devices share the cores: no real scaling).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from daetalker_jax.trainers import make_task
from daetalker_jax.trainers.base import Trainer

config_flags.DEFINE_config_file("config", "configs/dae.py:128", "Config file[:variant], as for training.")
flags.DEFINE_string("data", None, "A prepared dataset (python -m daetalker_jax.prepare).", required=True)
flags.DEFINE_integer("per_device_batch", 32, "Batch per device.")
flags.DEFINE_integer("steps", 60, "Steps per device count; the second half is timed.")
flags.DEFINE_list("devices", [], "Device counts (default 1, 2, 4, ... all).")
FLAGS = flags.FLAGS


def images_per_second(base: ml_collections.ConfigDict, data: str, devices: int, per_device_batch: int,
                      steps: int) -> float:
    """Trains `steps` steps on the first `devices` devices; img/s over the second half (compiled, warm)."""
    config = base.copy_and_resolve_references()
    config.data_dir, config.batch_size, config.num_steps = data, per_device_batch * devices, steps
    config.log_every, config.checkpoint_every, config.sample_every = steps // 2, 10 * steps, 0
    mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices],
                         axis_types=(jax.sharding.AxisType.Auto,))
    with tempfile.TemporaryDirectory() as workdir:
        Trainer(config, workdir, make_task(config), mesh=mesh).run()
        rows = [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]
    return [r for r in rows if "examples_per_s" in r][-1]["examples_per_s"]


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint at INFO
    n, per_device = jax.device_count(), FLAGS.per_device_batch
    counts = [int(c) for c in FLAGS.devices] or sorted({min(2 ** k, n) for k in range(n.bit_length() + 1)})
    print(f"devices: {jax.devices()[0].device_kind} x {n}, jax {jax.__version__}, {FLAGS.config.task} "
          f"{FLAGS.config.variant}, {per_device} per device")
    print("| devices | global batch | img/s | img/s per device | efficiency |\n|---|---|---|---|---|")
    base = None
    for count in counts:
        ips = images_per_second(FLAGS.config, FLAGS.data, count, per_device, FLAGS.steps)
        base = base or ips
        print(f"| {count} | {count * per_device} | {ips:.0f} | {ips / count:.0f} | {ips / (base * count):.0%} |",
              flush=True)


if __name__ == "__main__":
    app.run(main)
