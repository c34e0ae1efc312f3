#!/usr/bin/env bash
# The test suite, from a bare machine: set-up, then pytest (any failure, or no tests at all, exits non-zero).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
.venv/bin/ruff check daetalker_jax tests bench configs
exec .venv/bin/python -m pytest -q tests "$@"
