#!/usr/bin/env bash
# The main job on the embedded default data, from a bare machine: synthesize a small talking-face
# corpus (one identity, TTS speech, ground truth) with its preview, then prepare it into the training
# dataset (TFDS array_record). Later stages (train DAE -> extract -> train speech2latent -> generate)
# extend this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
OUT=${OUT:-runs/default}
SIZE=${SIZE:-128}
.venv/bin/python -m daetalker_jax.synth --out "$OUT/corpus" --minutes "${MINUTES:-1}" --size "$SIZE" "$@"
.venv/bin/python -m daetalker_jax.prepare --videos "$OUT/corpus/manifest.json" --out "$OUT/data" --size "$SIZE"
echo "done: clips in $OUT/corpus/clips, preview in $OUT/corpus/preview.png, dataset in $OUT/data"
