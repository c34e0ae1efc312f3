"""Grain pipelines: batch contents, determinism, mid-epoch restore through orbax, and disjoint and
complete epoch coverage across 8 devices and across 2 real jax.distributed processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from daetalker_jax.data import pipeline

ROOT = Path(__file__).resolve().parents[1]


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_frame_batches_and_determinism(tiny_dataset):
    data_dir, _ = tiny_dataset
    make = lambda seed: iter(pipeline.frame_dataset(str(data_dir), "train", 6, seed=seed))  # noqa: E731
    a, b, c = _take(make(1), 4), _take(make(1), 4), _take(make(2), 4)
    assert a[0]["image"].shape == (6, 64, 64, 3) and a[0]["image"].dtype == np.uint8
    assert a[0]["pose"].shape == (6, 3)
    assert _same(a, b) and not _same(a, c)


def test_sequence_windows_are_aligned_and_masked(tiny_dataset):
    data_dir, _ = tiny_dataset
    source = pipeline.data_source(str(data_dir), "clips", "train")
    longest = max(int(source[i]["n_frames"]) for i in range(len(source)))
    window = longest + 10   # longer than every clip: the tail is padding
    batch = next(iter(pipeline.sequence_dataset(str(data_dir), "train", 2, window, seed=3)))
    assert batch["mel"].shape == (2, 4 * window, 80) and batch["audio"].shape == (2, 640 * window)
    for row in range(2):
        clip = next(source[i] for i in range(len(source)) if int(source[i]["clip"]) == batch["clip"][row])
        n = int(clip["n_frames"])
        assert batch["start"][row] == 0 and batch["mask"][row].sum() == n and not batch["mask"][row, n:].any()
        np.testing.assert_array_equal(batch["pose"][row, :n], clip["pose"])
        np.testing.assert_array_equal(batch["mel"][row, :4 * n], clip["mel"])
        assert not batch["mel"][row, 4 * n:].any()
    ramp = {i: np.arange(400)[:, None] * np.ones(4) for i in range(50)}
    short = next(iter(pipeline.sequence_dataset(str(data_dir), "train", 2, 10, seed=3,
                                                extras={"latents": (ramp, 1)})))
    assert short["mask"].all() and short["latents"].shape == (2, 10, 4)
    np.testing.assert_array_equal(short["latents"][:, :, 0], short["start"][:, None] + np.arange(10))


def test_mid_epoch_restore_through_orbax_gives_the_same_next_batches(tiny_dataset, tmp_path):
    data_dir, _ = tiny_dataset
    make = lambda: iter(pipeline.frame_dataset(str(data_dir), "train", 4, seed=7))  # noqa: E731
    it = make()
    _take(it, 5)
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.save(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
    expected = _take(it, 6)
    fresh = make()
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        mngr.restore(5, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    assert _same(_take(fresh, 6), expected)


def pipeline_share(n_elements: int, global_batch: int, shard: pipeline.Shard) -> int:
    """How many of an epoch's first n_elements global elements fall in this shard's rows of each batch."""
    local = global_batch // shard.count
    return sum(1 for g in range(n_elements) if (g % global_batch) // local == shard.index)


def _epoch_ids(data_dir, shard: pipeline.Shard, n_elements: int, local_batch: int = 3) -> list[tuple[int, int]]:
    it = iter(pipeline.frame_dataset(str(data_dir), "train", local_batch * shard.count, seed=11, shard=shard))
    mine = pipeline_share(n_elements, local_batch * shard.count, shard)
    ids = []
    while len(ids) < mine:
        b = next(it)
        ids += list(zip(b["clip"].tolist(), b["frame"].tolist()))
    return ids[:mine]


def test_eight_shards_and_eight_devices_cover_an_epoch_disjointly(tiny_dataset):
    data_dir, _ = tiny_dataset
    n = len(pipeline.data_source(str(data_dir), "frames", "train"))
    per_shard = [_epoch_ids(data_dir, pipeline.Shard(i, 8), n) for i in range(8)]
    flat = [x for ids in per_shard for x in ids]
    assert len(flat) == n == len(set(flat))                 # disjoint, and every frame once

    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    batch = next(iter(pipeline.frame_dataset(str(data_dir), "train", 16, seed=0)))
    image = pipeline.to_global(batch, mesh)["image"]
    assert image.shape == (16, 64, 64, 3) and len(image.sharding.device_set) == 8
    rows = sorted((s.index[0].start, s.index[0].stop) for s in image.addressable_shards)
    assert rows == [(2 * i, 2 * i + 2) for i in range(8)]
    np.testing.assert_array_equal(np.asarray(image), batch["image"])


def test_two_processes_read_disjoint_complete_shards(tiny_dataset, tmp_path):
    data_dir, _ = tiny_dataset
    n = len(pipeline.data_source(str(data_dir), "frames", "train"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, str(ROOT / "tests" / "_pipeline_worker.py"), str(port), str(i),
                               str(data_dir), str(n), str(outs[i])], cwd=ROOT) for i in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    reports = [json.loads(o.read_text()) for o in outs]
    ids = [tuple(x) for r in reports for x in r["ids"]]
    assert len(ids) == n == len(set(ids))
    single = _epoch_ids(data_dir, pipeline.Shard(0, 1), n)
    assert set(ids) == set(single)
    for r in reports:
        assert r["global_shape"] == [8, 64, 64, 3] and r["devices"] == 8
    assert reports[0]["local_rows"] == [0, 1, 2, 3] and reports[1]["local_rows"] == [4, 5, 6, 7]


def test_worker_processes_give_the_same_batches(tiny_dataset):
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()   # grain workers read absl flags
    data_dir, _ = tiny_dataset
    inline = _take(iter(pipeline.frame_dataset(str(data_dir), "train", 4, seed=9)), 5)
    workers = _take(iter(pipeline.frame_dataset(str(data_dir), "train", 4, seed=9, workers=2)), 5)
    assert _same(inline, workers)


class _CountingSource:
    """Four 4-KiB records; remembers which it was asked for."""

    def __init__(self):
        self.reads = []

    def __len__(self):
        return 4

    def __getitem__(self, i):
        self.reads.append(i)
        return {"x": np.full(1024, i, np.float32)}


def test_memo_reads_each_entry_once_within_its_budget_and_forgets_when_pickled():
    import pickle

    memo = pipeline.Memo(_CountingSource(), budget_mb=10 / 1024)   # room for two entries (10 KiB)
    for i in (0, 1, 0, 1):
        np.testing.assert_array_equal(memo[i]["x"], np.full(1024, i, np.float32))
    assert memo.source.reads == [0, 1]                     # the repeats came from memory
    memo[0]
    memo[2]                                                # evicts 1, the least recently used
    memo[0], memo[1]
    assert memo.source.reads == [0, 1, 2, 1] and len(memo) == 4
    copy = pickle.loads(pickle.dumps(memo))                # what a Grain worker process receives
    copy[0], copy[0]
    assert copy.source.reads == [0, 1, 2, 1, 0]            # starts empty, then remembers
    tiny = pipeline.Memo(_CountingSource(), budget_mb=1 / 1024)   # an entry over the budget is read every time
    tiny[3], tiny[3]
    assert tiny.source.reads == [3, 3]


def test_sequence_batches_are_the_same_with_and_without_the_memo(tiny_dataset):
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()   # grain workers read absl flags
    data_dir, _ = tiny_dataset
    ramp = {i: np.arange(400)[:, None] * np.ones(4) for i in range(50)}
    make = lambda memory_mb=512, **kw: iter(pipeline.sequence_dataset(  # noqa: E731
        str(data_dir), "train", 2, 10, seed=5, memory_mb=memory_mb, **kw,
        extras={"latents": (pipeline.Memo(ramp, memory_mb) if memory_mb else ramp, 1)}))
    plain = _take(make(memory_mb=0), 12)   # > one epoch of the tiny corpus: memo hits
    assert _same(plain, _take(make(), 12)) and _same(plain, _take(make(workers=2), 12))
