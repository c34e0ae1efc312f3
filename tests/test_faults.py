"""Faults: `kill -9` of a training process in the middle of training and in the middle of a checkpoint
write; the restarted command resumes from the last complete checkpoint, nothing is corrupt, and (CPU,
fixed seed) the loss of every step equals that of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from daetalker_jax.trainers.base import load_trained

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}


def _start(workdir: Path, data_dir: Path, checkpoint_every: int = 1) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "daetalker_jax.train", "--config", "configs/dae.py:tiny",
                             "--workdir", str(workdir), f"--config.data_dir={data_dir}", f"--config.num_steps={STEPS}",
                             f"--config.checkpoint_every={checkpoint_every}", "--config.log_every=1"],
                            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _losses(workdir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {r["step"]: r["loss"] for r in rows}


def _tmp_checkpoints(workdir: Path) -> list[str]:
    folder = workdir / "checkpoints"
    return [p.name for p in folder.iterdir() if "tmp" in p.name] if folder.exists() else []


def _wait_for(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the training process ended before the awaited moment"
        assert time.monotonic() < end, "timed out waiting for the training process"
        time.sleep(0.001)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    _wait_for(proc, ready, timeout)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_mid_training_and_mid_checkpoint_write(tiny_dataset32, tmp_path):
    straight, mid_train, mid_write = tmp_path / "straight", tmp_path / "mid_train", tmp_path / "mid_write"
    reference = _start(straight, tiny_dataset32)
    # the others start once the reference has compiled its step: they load it from the compilation cache
    _wait_for(reference, lambda: (straight / "metrics.jsonl").exists())
    a = _start(mid_train, tiny_dataset32, checkpoint_every=3)   # killed at step 5 or later: steps after 3 (or 6) redone
    _kill_when(a, lambda: (mid_train / "checkpoints" / "3").exists() and
               len((mid_train / "metrics.jsonl").read_text().splitlines()) >= 5)
    b = _start(mid_write, tiny_dataset32)
    for _attempt in range(5):   # kill while orbax has a checkpoint half written (a tmp folder exists)
        _kill_when(b, lambda: bool(_tmp_checkpoints(mid_write)) and
                   (mid_write / "checkpoints" / "1").exists())
        if _tmp_checkpoints(mid_write):
            break
        b = _start(mid_write, tiny_dataset32)   # the write finished between seeing and killing: again
    half_written = _tmp_checkpoints(mid_write)
    assert half_written, "never caught a checkpoint write in progress"
    _finish(reference)
    resumed = [_start(mid_train, tiny_dataset32, checkpoint_every=3), _start(mid_write, tiny_dataset32)]
    logs = [_finish(p) for p in resumed]

    expected = _losses(straight)
    assert sorted(expected) == list(range(1, STEPS + 1))
    for workdir, log in zip((mid_train, mid_write), logs):
        assert "resumed from" in log
        assert _losses(workdir) == expected                          # every step once, identical losses
        assert not _tmp_checkpoints(workdir)                         # the half-written one is gone
        steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir())
        assert steps[-1] == STEPS
        for step in steps:              # every kept checkpoint restores; equal to the uninterrupted run's
            model = load_trained(workdir, step)[1]
            if (straight / "checkpoints" / str(step)).exists():
                _same_weights(model, load_trained(straight, step)[1])


def _same_weights(a: nnx.Module, b: nnx.Module) -> None:
    for x, y in zip(jax.tree.leaves(nnx.state(a, nnx.Param)), jax.tree.leaves(nnx.state(b, nnx.Param)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_full_disk_is_a_clear_error_without_a_broken_checkpoint(tiny_dataset32, tmp_path):
    """The file-size limit stands in for a full disk (both make the checkpoint's writes fail with an OS
    error): exit 2 with a message, and no step folder that looks complete."""
    import resource

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # fail the write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))

    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "daetalker_jax.train", "--config", "configs/dae.py:tiny",
                           "--workdir", str(workdir), f"--config.data_dir={tiny_dataset32}", "--config.num_steps=2",
                           "--config.checkpoint_every=1"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=600, preexec_fn=limit_file_size)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: could not write a checkpoint" in proc.stderr and "free disk space" in proc.stderr
    assert not [p for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
