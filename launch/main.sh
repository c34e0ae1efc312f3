#!/usr/bin/env bash
# The main job on the embedded default data, from a bare machine. For now: synthesize a small
# talking-face corpus (one identity, TTS speech, ground truth) and its preview contact sheet.
# Later stages (prepare -> train DAE -> extract -> train speech2latent -> generate) extend this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
OUT=${OUT:-runs/default}
.venv/bin/python -m daetalker_jax.synth --out "$OUT/corpus" --minutes "${MINUTES:-1}" --size "${SIZE:-128}" "$@"
echo "done: clips in $OUT/corpus/clips, preview in $OUT/corpus/preview.png"
