"""One JAX process of the 2-process pipeline test (started by test_pipeline.py, not collected)."""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

from daetalker_jax.data import pipeline  # noqa: E402
from test_pipeline import pipeline_share  # noqa: E402


def main(port: str, pid: str, data_dir: str, n_elements: str, out: str) -> None:
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=int(pid))
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    shard = pipeline.Shard.of_this_process()
    it = iter(pipeline.frame_dataset(data_dir, "train", global_batch=8, seed=5, shard=shard))
    mine = pipeline_share(int(n_elements), 8, shard)   # my share of the epoch's global elements
    ids, first = [], None
    while len(ids) < mine:
        batch = next(it)
        first = first or pipeline.to_global(batch, mesh)
        ids += [[int(c), int(f)] for c, f in zip(batch["clip"], batch["frame"])]
    image = first["image"]
    report = {"ids": ids[:mine], "global_shape": list(image.shape), "devices": len(image.sharding.device_set),
              "local_rows": sorted(int(s.index[0].start) for s in image.addressable_shards)}
    with open(out, "w") as f:
        json.dump(report, f)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:])
