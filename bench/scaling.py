"""Data-parallel scaling of training on one host: the real Trainer (input pipeline, sharded batch, gradient
all-reduce, EMA) on meshes of 1, 2, 4, ... devices with a fixed batch per device (weak scaling).

Run (a machine with several GPUs; the multi-GPU issue):
  python bench/scaling.py --config configs/dae.py:128 --data runs/default/data --per-device-batch 32
Prints a Markdown table: devices, global batch, img/s, img/s per device, efficiency against 1 device.
On a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/scaling.py --config
configs/dae.py:tiny --data DIR --steps 6` checks that it runs (CPU devices share the cores: no real scaling).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import jax

from daetalker_jax.trainers import make_task
from daetalker_jax.trainers.base import Trainer


def load_config(spec: str):
    """`configs/dae.py:128` -> that module's get_config("128")."""
    import importlib.util

    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


def images_per_second(spec: str, data: str, devices: int, per_device_batch: int, steps: int) -> float:
    """Trains `steps` steps on the first `devices` devices; img/s over the second half (compiled, warm)."""
    config = load_config(spec)
    config.data_dir, config.batch_size, config.num_steps = data, per_device_batch * devices, steps
    config.log_every, config.checkpoint_every, config.sample_every = steps // 2, 10 * steps, 0
    mesh = jax.make_mesh((devices,), ("data",), devices=jax.devices()[:devices],
                         axis_types=(jax.sharding.AxisType.Auto,))
    with tempfile.TemporaryDirectory() as workdir:
        Trainer(config, workdir, make_task(config), mesh=mesh).run()
        rows = [json.loads(line) for line in open(Path(workdir) / "metrics.jsonl")]
    return [r for r in rows if "examples_per_s" in r][-1]["examples_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/dae.py:128", help="config file[:variant]")
    p.add_argument("--data", required=True, help="a prepared dataset (python -m daetalker_jax.prepare)")
    p.add_argument("--per-device-batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60, help="per device count; the second half is timed")
    p.add_argument("--devices", type=int, nargs="+", help="device counts (default 1, 2, 4, ... all)")
    args = p.parse_args()
    n = jax.device_count()
    counts = args.devices or sorted({min(2 ** k, n) for k in range(n.bit_length() + 1)})
    print(f"devices: {jax.devices()[0].device_kind} x {n}, jax {jax.__version__}, {args.config}, "
          f"{args.per_device_batch} per device")
    print("| devices | global batch | img/s | img/s per device | efficiency |\n|---|---|---|---|---|")
    base = None
    for count in counts:
        ips = images_per_second(args.config, args.data, count, args.per_device_batch, args.steps)
        base = base or ips
        print(f"| {count} | {count * args.per_device_batch} | {ips:.0f} | {ips / count:.0f} | "
              f"{ips / (base * count):.0%} |", flush=True)


if __name__ == "__main__":
    main()
