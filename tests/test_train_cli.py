"""`python -m daetalker_jax.train` from the command line: a tiny run with overrides, a typo in an
override, and a run that diverges (clear NaN/Inf message, exit code 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daetalker_jax.train", "--config", "configs/dae.py:tiny", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_tiny_run_with_overrides_writes_metrics_and_checkpoint(tiny_dataset32, tmp_path):
    result = _train("--workdir", str(tmp_path), f"--config.data_dir={tiny_dataset32}", "--config.num_steps=3",
                    "--config.checkpoint_every=3")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["loss"] > 0 for r in rows)
    assert (tmp_path / "checkpoints" / "3").is_dir() and list((tmp_path / "tensorboard").iterdir())
    assert "final: " in result.stdout
    # where the start-up went, printed once (the tiny config logs every step)
    assert len(re.findall(r"start-up: data [\d.]+ s, model [\d.]+ s, first batch [\d.]+ s, first step [\d.]+ s",
                          result.stdout)) == 1, result.stdout[-2000:]


def test_override_typo_and_divergence_are_clear_errors(tiny_dataset32, tmp_path):
    typo = _train("--workdir", str(tmp_path / "a"), "--config.batchsize=4")
    assert typo.returncode != 0 and "batchsize" in typo.stderr
    diverged = _train("--workdir", str(tmp_path / "b"), f"--config.data_dir={tiny_dataset32}",
                      "--config.learning_rate=1e30", "--config.num_steps=5", "--config.checkpoint_every=100")
    assert diverged.returncode == 2 and "became NaN/Inf" in diverged.stderr, diverged.stderr[-2000:]
    assert not (tmp_path / "b" / "checkpoints" / "5").exists()
