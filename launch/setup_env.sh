#!/usr/bin/env bash
# Prepares a fresh Debian/Ubuntu machine for daetalker-jax: the system tools (espeak-ng, ffmpeg) and a
# virtualenv .venv with the pinned Python packages. Safe to rerun; skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt"
  apt_install "${missing[@]}"
fi

# Python: 3.12 first (what CI and the GPU image run), then any python3 >= 3.11.
find_python() {
  for cand in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}
PY=$(find_python) || { echo "setup: installing python3 with apt"; apt_install python3 python3-venv; PY=$(find_python); } || {
  echo "error: Python >= 3.11 is needed (found none); install python3.12 and rerun" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv 2>/dev/null || {
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python$ver-venv" || apt_install python3-venv
    rm -rf .venv; "$PY" -m venv .venv; }
fi

constraints=()
if .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  constraints=(-c requirements-lock.txt)
fi
stamp=$(cat requirements.txt requirements-nodeps.txt requirements-lock.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing the pinned Python packages into .venv (about a minute)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt "${constraints[@]}"
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$stamp" > .venv/.installed
fi

# Accelerator builds of the same jax version: ACCEL=cuda (NVIDIA GPUs, CUDA 12) or ACCEL=tpu (Cloud TPU VMs).
if [ -n "${ACCEL:-}" ]; then
  ver=$(.venv/bin/python -c 'import jax; print(jax.__version__)')
  case "$ACCEL" in
    cuda) extra="cuda12" ;;
    tpu) extra="tpu" ;;
    *) echo "error: ACCEL must be cuda or tpu, got '$ACCEL'" >&2; exit 2 ;;
  esac
  echo "setup: installing jax[$extra]==$ver"
  .venv/bin/python -m pip install -q "jax[$extra]==$ver"
fi
