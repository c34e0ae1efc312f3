#!/usr/bin/env bash
# N processes of one command on this machine, joined through a coordinator on 127.0.0.1: a multi-host run
# in miniature (tests, debugging the multi-host path without a cluster) or several processes sharing a GPU box.
# Usage: NPROC=2 bash launch/local.sh -m daetalker_jax.train --config configs/dae.py:tiny --workdir runs/t ...
# Knobs: NPROC (2), PORT (random), PY (.venv/bin/python), CPU_DEVICES=k (each process on k fake CPU devices),
# GPUS_PER_PROCESS=g (process i sees GPUs i*g .. i*g+g-1). If one process fails, the others are stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
NPROC=${NPROC:-2}; PORT=${PORT:-$((20000 + RANDOM % 20000))}; PY=${PY:-.venv/bin/python}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
for ((i = 0; i < NPROC; i++)); do
  vars=(JAX_COORDINATOR_ADDRESS="127.0.0.1:$PORT" JAX_NUM_PROCESSES="$NPROC" JAX_PROCESS_ID="$i")
  if [ -n "${CPU_DEVICES:-}" ]; then
    vars+=(JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$CPU_DEVICES")
  fi
  if [ -n "${GPUS_PER_PROCESS:-}" ]; then
    vars+=(CUDA_VISIBLE_DEVICES="$(seq -s, $((i * GPUS_PER_PROCESS)) $((i * GPUS_PER_PROCESS + GPUS_PER_PROCESS - 1)))")
  fi
  env "${vars[@]}" "$PY" "$@" &
  pids+=($!)
done
status=0
for ((k = 0; k < NPROC; k++)); do
  if ! wait -n; then
    status=1
    kill "${pids[@]}" 2>/dev/null || true
  fi
done
exit $status
