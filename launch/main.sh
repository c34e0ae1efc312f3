#!/usr/bin/env bash
# The main job on the embedded default data, from a bare machine, end to end:
#   synthetic corpus -> prepare -> train the DiffAE -> extract latents -> train speech2latent
#   -> generate a talking video for held-out speech (a test sentence in the held-out voice) + contact sheet.
# On a CPU it picks the small `cpu` configs (32 px, about 10 minutes on 2 cores); with a GPU/TPU the 128 px
# DiffAE and the default speech2latent on a 30-minute corpus. Rerunning resumes every stage.
# Knobs: OUT=runs/x MINUTES=.. SIZE=.. DAE_STEPS=.. S2L_STEPS=.. SEED=.. SPEECH_DIR=dir|none CORPUS=an/existing/corpus
# bash launch/main.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup_env.sh
PY=.venv/bin/python
OUT=${OUT:-runs/default}
BACKEND=$($PY -c "import jax; print(jax.default_backend())" 2>/dev/null)
if [ "$BACKEND" = "cpu" ]; then
  MINUTES=${MINUTES:-4}; SYNTH_SIZE=128; SIZE=${SIZE:-32}; MARGIN=1.2
  DAE_CONFIG=configs/dae.py:cpu; S2L_CONFIG=configs/s2l.py:cpu; DAE_STEPS=${DAE_STEPS:-6000}; S2L_STEPS=${S2L_STEPS:-1500}
  GEN_STEPS=10; VIDEO_SIZE=(--video-size 128)   # a 32 px H.264 video loses the lips to 4:2:0 colour subsampling
else
  MINUTES=${MINUTES:-30}; SYNTH_SIZE=128; SIZE=${SIZE:-128}; MARGIN=2.2
  DAE_CONFIG=configs/dae.py:128; S2L_CONFIG=configs/s2l.py; DAE_STEPS=${DAE_STEPS:-20000}; S2L_STEPS=${S2L_STEPS:-10000}
  GEN_STEPS=20; VIDEO_SIZE=()
fi
echo "main job on $BACKEND: $MINUTES min corpus, ${SIZE}px, $DAE_CONFIG x $DAE_STEPS steps, $S2L_CONFIG x $S2L_STEPS steps"
T0=$SECONDS
source launch/stages.sh
train_stages "$@"
C=${CORPUS:-$OUT/corpus}
# Held-out speech: the first test clip spoken by the held-out TTS voice (else the first test clip), then the first
# one of the held-out recorded speaker, if the corpus has one.
CLIPS=$($PY - "$C/manifest.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
test = [c for c in m["clips"] if c["split"] == "test"]
held = [c for c in test if c["voice"] in m["held_out_voices"]]
recorded = [c for c in test if c.get("group") == "real_held_out"]
print(" ".join(c["file"] for c in [(held or test)[0]] + recorded[:1]))
EOF
)
for CLIP in $CLIPS; do
  NAME=talking; [ "$CLIP" = "${CLIPS%% *}" ] || NAME=talking_recorded
  $PY -m daetalker_jax.generate --audio "$C/$CLIP" --dae "$OUT/dae" --s2l "$OUT/s2l" --out "$OUT/$NAME.mp4" \
      --steps "$GEN_STEPS" "${VIDEO_SIZE[@]}"
  $PY -m daetalker_jax.generation.sheet --video "$OUT/$NAME.mp4" --clip "$C/$CLIP" --data "$OUT/data" \
      --out "$OUT/$NAME.png"
done
echo "done in $(( (SECONDS - T0) / 60 )) min: video $OUT/talking.mp4 (held-out TTS voice: $C/${CLIPS%% *}),"
[ "$CLIPS" = "${CLIPS%% *}" ] || echo "video $OUT/talking_recorded.mp4 (held-out recorded speaker: $C/${CLIPS##* }),"
echo "contact sheets $OUT/talking*.png, corpus preview $C/preview.png, runs $OUT/dae and $OUT/s2l"
