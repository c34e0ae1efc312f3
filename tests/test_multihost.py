"""Multi-host runs with real `jax.distributed` processes on 127.0.0.1 (launch/local.sh): 2 processes
x 4 CPU devices train the DiffAE and speech2latent to the same losses and parameters as 1 process x 8
devices; a checkpoint restores on another device and process count; 2 processes extract the same latents as one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx

from configs import dae, s2l
from conftest import logged_losses
from daetalker_jax.data.clip_arrays import ClipArrays
from daetalker_jax.data.extract import splits_of
from daetalker_jax.trainers.base import load_trained

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2


def _train_args(config: str, workdir: Path, data_dir: Path) -> list[str]:
    return ["-m", "daetalker_jax.train", "--config", config, "--workdir", str(workdir),
            f"--config.data_dir={data_dir}", f"--config.num_steps={STEPS}", f"--config.checkpoint_every={STEPS}",
            "--config.sample_every=0", "--config.log_every=1"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k.startswith("JAX_COMPILATION")
           or k.startswith("JAX_PERSISTENT")}
    return {**env, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), **extra}


def _ema_params(workdir: Path) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(load_trained(workdir)[1], nnx.Param))]


@pytest.fixture(scope="module")
def runs(tiny_dataset32, extracted, tmp_path_factory) -> dict:
    """Both stages trained for STEPS steps, as 1 process x 8 devices and as 2 processes x 4 devices (started
    together: 3 processes on the CPU at once)."""
    root = tmp_path_factory.mktemp("multihost")
    jobs, out = [], {}
    stages = (("dae", "configs/dae.py:tiny", tiny_dataset32), ("s2l", "configs/s2l.py:tiny", extracted))
    for task, config, data in stages:
        one, two = root / f"{task}_1x8", root / f"{task}_2x4"
        out[task] = (one, two)
        jobs.append(subprocess.Popen([sys.executable, *_train_args(config, one, data)], cwd=ROOT,
                                     env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=8"),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        jobs.append(subprocess.Popen(["bash", "launch/local.sh", *_train_args(config, two, data)], cwd=ROOT,
                                     env=_env(NPROC="2", CPU_DEVICES="4", PY=sys.executable),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for job in jobs[-2:]:   # one stage at a time keeps the 2-core CI machine responsive
            log, _ = job.communicate(timeout=600)
            assert job.returncode == 0, log[-3000:]
    return out


@pytest.mark.parametrize("task", ["dae", "s2l"])
def test_two_processes_train_like_one(runs, task):
    """Same global batches => same losses and parameters. The global batch of 2 x 4 is glued from each
    process' own shard (each saves its own iterator state); had both read the same rows, the batch and so
    the loss would differ from 1 x 8. Tolerances: the all-reduce sums gradients in another order
    (float32 noise ~1e-7), and Adam divides each gradient element by its own magnitude, so in elements
    whose gradient is ~0 that noise can move a weight by up to ~lr per step (tiny configs: 1e-4 DiffAE,
    1e-3 speech2latent); the median weight agrees to 1e-6."""
    one, two = runs[task]
    lr = {"dae": dae.get_config("tiny"), "s2l": s2l.get_config("tiny")}[task].learning_rate
    assert len(logged_losses(one)) == STEPS
    np.testing.assert_allclose(logged_losses(two), logged_losses(one), rtol=1e-4)
    diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(_ema_params(one), _ema_params(two), strict=True)])
    assert diff.max() <= STEPS * lr and np.median(diff) <= 1e-6, (diff.max(), np.median(diff))
    data = two / "checkpoints" / str(STEPS) / "data"
    assert sorted(p.name for p in data.glob("process_*.json")) == ["process_0-of-2.json", "process_1-of-2.json"]


def test_resume_on_another_device_and_process_count(runs, extracted, tmp_path, capsys):
    """The 2-process x 4-device speech2latent checkpoint resumes in this single process on 4 devices:
    parameters, optimizer and EMA equal what was saved; the data iterator restarts its epoch (log line);
    training continues."""
    from configs import s2l
    from daetalker_jax.checkpoint import abstract_like
    from daetalker_jax.trainers.base import Trainer
    from daetalker_jax.trainers.s2l import S2LTask
    from conftest import mesh_of

    two = tmp_path / "run"
    shutil.copytree(runs["s2l"][1], two)
    c = s2l.get_config("tiny")
    c.data_dir, c.num_steps, c.sample_every, c.checkpoint_every = str(extracted), STEPS + 1, 0, STEPS + 1
    trainer = Trainer(c, two, S2LTask(c), mesh=mesh_of(4))
    assert trainer.step == STEPS and "written by 2 processes and this run has 1" in capsys.readouterr().out
    saved = trainer.ckpt.restore(abstract_like(trainer._tree(), jax.sharding.SingleDeviceSharding(jax.devices()[0])))
    now = trainer._tree()
    for a, b in zip(jax.tree.leaves(saved), jax.tree.leaves(now), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    trainer.run()
    assert trainer.ckpt.latest_step == STEPS + 1 and np.isfinite(logged_losses(two)[-1])


def test_two_processes_extract_like_one(dae_run, tiny_dataset32, extracted, tmp_path):
    """`extract` as 2 processes x 2 devices: each encodes its share of the record chunks (one split each here) into
    the shared parts folder, process 0 assembles them and writes the train-split mean / std. Every clip's latents and
    the statistics equal the single-process extraction (the `extracted` fixture, 8 devices) to 1e-5: the encoder runs
    the same images at other per-device batch shapes; a chunk left out by either process would miss its clips."""
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset32, data)
    assert len(splits_of(data)) >= 2   # at least one chunk per process
    job = subprocess.run(["bash", "launch/local.sh", "-m", "daetalker_jax.extract", "--data", str(data), "--dae",
                          str(dae_run), "--batch-size", "16"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env=_env(NPROC="2", CPU_DEVICES="2", PY=sys.executable))
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    one, two = ClipArrays(extracted, "latents"), ClipArrays(data, "latents")
    assert two.meta["complete"] and two.meta["clips"] == one.meta["clips"]
    for key in ("mean", "std"):
        np.testing.assert_allclose(two.meta[key], one.meta[key], rtol=1e-5, atol=1e-6)
    clips = [c for split in one.meta["clips"].values() for c in split]
    assert clips
    for clip in clips:
        np.testing.assert_allclose(two[clip], one[clip], rtol=1e-5, atol=1e-5)
    assert not (two.dir / "parts").exists()


def test_tpu_pod_launcher_runs_the_same_command_on_every_worker(tmp_path):
    """gcloud cannot run here: a stand-in records its arguments. The command must go to --worker=all and
    keep arguments with spaces intact when the worker's shell parses it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$GCLOUD_ARGS"\n')
    (bin_dir / "gcloud").chmod(0o755)
    record = tmp_path / "args"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TPU": "pod", "ZONE": "z",
           "GCLOUD_ARGS": str(record)}
    subprocess.run(["bash", "launch/tpu_pod.sh", "train", "--config", "configs/dae.py", "--workdir", "/mnt/my runs"],
                   cwd=ROOT, env=env, check=True)
    args = record.read_text().splitlines()
    assert args[:5] == ["compute", "tpus", "tpu-vm", "ssh", "pod"] and "--worker=all" in args
    command = args[args.index("--command") + 1]
    argv = subprocess.run(["bash", "-c", command.replace(".venv/bin/python", "printf '%s\\n'").replace(
        "cd daetalker-jax && ", "")], capture_output=True, text=True, check=True).stdout.splitlines()
    assert argv == ["-m", "daetalker_jax.train", "--config", "configs/dae.py", "--workdir", "/mnt/my runs"]
    bad = subprocess.run(["bash", "launch/tpu_pod.sh", "nonsense"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "usage" in bad.stderr
