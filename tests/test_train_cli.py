"""`python -m daetalker_jax.train` from the command line: `--compile_only`, then a tiny run with overrides that
uses what it compiled, a typo in an override, a run that diverges (clear NaN/Inf message, exit code 2)."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from daetalker_jax.data.clip_arrays import ClipArrays

ROOT = Path(__file__).resolve().parents[1]


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daetalker_jax.train", "--config", "configs/dae.py:tiny", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_override_typo_and_divergence_are_clear_errors(tiny_dataset32, tmp_path):
    typo = _train("--workdir", str(tmp_path / "a"), "--config.batchsize=4")
    assert typo.returncode != 0 and "batchsize" in typo.stderr
    diverged = _train("--workdir", str(tmp_path / "b"), f"--config.data_dir={tiny_dataset32}",
                      "--config.learning_rate=1e30", "--config.num_steps=5", "--config.checkpoint_every=100")
    assert diverged.returncode == 2 and "became NaN/Inf" in diverged.stderr, diverged.stderr[-2000:]
    assert not (tmp_path / "b" / "checkpoints" / "5").exists()


def _with_cache(tmp_path: Path):
    """A subprocess runner with a private $JAX_COMPILATION_CACHE_DIR, and the names of its train-step entries."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla")}
    run = functools.partial(subprocess.run, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    return run, lambda: sorted(p.name for p in (tmp_path / "xla").glob("jit_flat-*"))


def test_compile_only_fills_the_cache_that_training_then_uses(tiny_dataset32, tmp_path):
    """`--compile_only` compiles the DiffAE's train step from the config alone (no data, no workdir) into
    $JAX_COMPILATION_CACHE_DIR; the training run that follows (with overrides) finds it there: no second
    train-step entry, and it writes its metrics, checkpoint and logs.
    A task whose batch shapes come from its data is refused with exit status 2."""
    run, steps = _with_cache(tmp_path)
    base = [sys.executable, "-m", "daetalker_jax.train"]
    compiled = run([*base, "--config", "configs/dae.py:tiny", "--compile_only"])
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    assert re.search(r"compiled the train step in [\d.]+ s; per device: arguments [\d.]+ GiB", compiled.stdout)
    assert len(steps()) == 1
    before = steps()
    workdir = tmp_path / "run"
    trained = run([*base, "--config", "configs/dae.py:tiny", "--workdir", str(workdir),
                   f"--config.data_dir={tiny_dataset32}", "--config.num_steps=3", "--config.checkpoint_every=3"])
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert steps() == before
    # the run with its overrides: metrics of every step, the checkpoint, TensorBoard, the final line
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    assert (workdir / "checkpoints" / "3").is_dir() and list((workdir / "tensorboard").iterdir())
    assert "final: " in trained.stdout
    # where the start-up went, printed once (the tiny config logs every step)
    assert len(re.findall(r"start-up: data [\d.]+ s, model [\d.]+ s, first batch [\d.]+ s, first step [\d.]+ s",
                          trained.stdout)) == 1, trained.stdout[-2000:]
    refused = run([*base, "--config", "configs/s2l.py", "--compile_only"])   # no latent_dim: shapes unknown
    assert refused.returncode == 2 and "--config.latent_dim" in refused.stderr
    refused = run([*base, "--config", "configs/sync.py:tiny", "--compile_only"])
    assert refused.returncode == 2 and "--compile_only needs batch shapes" in refused.stderr


def test_speech2latent_compile_only_is_the_program_its_training_runs(extracted, tmp_path):
    """speech2latent's step compiles from the config and the DiffAE's latent size alone (the reference run does it
    while the DiffAE trains, before the latents exist); training on the extracted data then adds no entry."""
    run, steps = _with_cache(tmp_path)
    base = [sys.executable, "-m", "daetalker_jax.train", "--config", "configs/s2l.py:tiny"]
    latent_dim = ClipArrays(extracted, "latents").meta["latent_dim"]
    compiled = run([*base, "--compile_only", f"--config.latent_dim={latent_dim}"])
    assert compiled.returncode == 0, compiled.stderr[-2000:]
    before = steps()
    assert len(before) == 1
    trained = run([*base, "--workdir", str(tmp_path / "run"), f"--config.data_dir={extracted}",
                   "--config.num_steps=2", "--config.sample_every=0"])
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert steps() == before


def test_help_exits_0_and_lists_the_configs_and_show_config_prints_every_field():
    for flag in ("--help", "-h", "--helpfull"):
        result = subprocess.run([sys.executable, "-m", "daetalker_jax.train", flag], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, (flag, result.stderr[-1000:])
        assert "--workdir" in result.stdout and "configs/s2l.py (default, paper, ref, cpu, tiny)" in result.stdout
        assert "configs/dae.py (128, 256" in result.stdout and "--show_config" in result.stdout
    shown = _train("--config.batch_size=12", "--show_config")
    assert shown.returncode == 0, shown.stderr[-1000:]
    assert "batch_size: 12" in shown.stdout and "mouth_weight:" in shown.stdout and "model:" in shown.stdout
