#!/usr/bin/env bash
# The 10-minute reference run on one GPU, our standing quality + speed benchmark:
#   synthetic corpus (30 min of speech, 128x128, one identity, held-out sentences and voice) -> prepare ->
#   DiffAE -> extract -> speech2latent -> generate and score every test clip (python -m daetalker_jax.evaluate).
# Writes OUT_DIR/report/{report.json,summary.md,*.png,sample.mp4,sheet.png} and OUT_DIR/timings.txt (seconds
# per stage). Record its numbers and date in bench/RESULTS.md.
# Usage: bash launch/reference_run.sh OUT_DIR
# Knobs: MINUTES SIZE MARGIN DAE_CONFIG DAE_STEPS DAE_ARGS S2L_CONFIG S2L_STEPS S2L_ARGS GEN_STEPS WORKERS PRECOMPILE,
# EVAL_ARGS (e.g. --max-clips 20 --no-fvd), CORPUS=an/existing/corpus
# (for machines without espeak-ng/ffmpeg: synthesize elsewhere, copy it over), SKIP_SETUP=1 with PY=python3
# when the packages are already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash launch/reference_run.sh OUT_DIR}
if [ -z "${SKIP_SETUP:-}" ]; then bash launch/setup_env.sh; fi
PY=${PY:-.venv/bin/python}
MINUTES=${MINUTES:-30}; SYNTH_SIZE=${SYNTH_SIZE:-128}; SIZE=${SIZE:-128}; MARGIN=${MARGIN:-1.2}
DAE_CONFIG=${DAE_CONFIG:-configs/dae.py:ref}; DAE_STEPS=${DAE_STEPS:-3000}
S2L_CONFIG=${S2L_CONFIG:-configs/s2l.py:ref}; S2L_STEPS=${S2L_STEPS:-2000}; GEN_STEPS=${GEN_STEPS:-20}
echo "reference run on $($PY -c 'import jax; print(jax.devices()[0].device_kind)'): $MINUTES min corpus, ${SIZE}px," \
     "$DAE_CONFIG x $DAE_STEPS, $S2L_CONFIG x $S2L_STEPS, $GEN_STEPS DDIM steps"
T0=$SECONDS
rm -f "$OUT/timings.txt"
# A fresh XLA cache per run (a cold start, as from a bare checkout): both train steps compile into it while synth
# and prepare run (PRECOMPILE=1), and evaluate keeps its programs there.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$OUT/xla_cache}
PRECOMPILE=${PRECOMPILE:-1}
source launch/stages.sh
train_stages
stage evaluate $PY -m daetalker_jax.evaluate --dae "$OUT/dae" --s2l "$OUT/s2l" --data "$OUT/data" \
    --corpus "${CORPUS:-$OUT/corpus}/clips" --out "$OUT/report" --steps "$GEN_STEPS" ${EVAL_ARGS:-}
echo "reference run done in $(( SECONDS - T0 )) s (per stage: $(tr '\n' ' ' < "$OUT/timings.txt"))"
echo "report: $OUT/report/summary.md, video $OUT/report/sample.mp4, contact sheet $OUT/report/sheet.png"
