# Sourced by main.sh and reference_run.sh: from the embedded default data to trained runs under $OUT.
# Expects PY OUT MINUTES SYNTH_SIZE SIZE MARGIN DAE_CONFIG DAE_STEPS S2L_CONFIG S2L_STEPS; CORPUS (optional)
# reuses an already synthesized corpus folder instead of synthesizing one (machines without espeak-ng);
# DAE_ARGS / S2L_ARGS (optional) add --config.x=y overrides; SPEECH_DIR (default runs/speech; `none`: TTS only) is
# where Debian's recorded voice prompts are fetched once (python -m daetalker_jax.synth.recordings) to speak half of
# the corpus, one speaker held out for testing; SEED (default 0) seeds the corpus and both trainings; WORKERS
# (default: all cores) synthesizes and prepares
# in parallel; PRECOMPILE=1 compiles the DiffAE's and speech2latent's train steps while synth and prepare run
# (needs $JAX_COMPILATION_CACHE_DIR; speech2latent only for log-mel features). The DiffAE's compile is the longest
# thing before its training, so everything beside it runs under `nice`, and speech2latent's compile is awaited
# only before speech2latent trains. The two compiles run one after the other and without XLA's preallocation of
# 75% of the GPU: XLA autotunes each convolution on the GPU while compiling and keeps the winners in the cached
# program, and two processes holding most of the memory at once left the autotuner without workspace, so the
# cached DiffAE step trained ~24x slower on an H100 (issue: the reference run's pre-compile).
# Every stage resumes or skips finished work when rerun. Extra arguments go to the synth command.
train_stages() {
  local corpus=${CORPUS:-$OUT/corpus}
  local dae_compile="" s2l_compile="" low=(nice -n 10)
  if [ -n "${PRECOMPILE:-}" ]; then   # both train steps compile into $JAX_COMPILATION_CACHE_DIR meanwhile
    mkdir -p "$OUT"
    local z_dim
    z_dim=$($PY - "$DAE_CONFIG" <<'PYEOF'
import importlib.util, sys
path, _, arg = sys.argv[1].partition(":")
spec = importlib.util.spec_from_file_location("dae_config", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.get_config(arg or None).model.z_channels)
PYEOF
)
    XLA_PYTHON_CLIENT_PREALLOCATE=false $PY -m daetalker_jax.train --config "$DAE_CONFIG" --compile_only \
        --config.num_steps="$DAE_STEPS" ${DAE_ARGS:-} > "$OUT/precompile.log" 2>&1 &
    dae_compile=$!
    ( wait_for "$dae_compile"
      XLA_PYTHON_CLIENT_PREALLOCATE=false "${low[@]}" $PY -m daetalker_jax.train --config "$S2L_CONFIG" --compile_only \
        --config.num_steps="$S2L_STEPS" --config.latent_dim="$z_dim" ${S2L_ARGS:-} > "$OUT/precompile_s2l.log" 2>&1 ) &
    s2l_compile=$!
  fi
  if [ -z "${CORPUS:-}" ]; then
    local speech=${SPEECH_DIR:-runs/speech} recorded=()
    if [ "$speech" != none ]; then
      stage fetch_speech $PY -m daetalker_jax.synth.recordings --out "$speech"
      recorded=(--speech-dir "$speech")
    fi
    stage synth "${low[@]}" $PY -m daetalker_jax.synth --out "$corpus" --minutes "$MINUTES" --size "$SYNTH_SIZE" \
        --workers "${WORKERS:-$(nproc)}" --seed "${SEED:-0}" "${recorded[@]}" "$@"
  fi
  stage prepare "${low[@]}" $PY -m daetalker_jax.prepare --videos "$corpus/manifest.json" --out "$OUT/data" --size "$SIZE" \
      --margin "$MARGIN" --workers "${WORKERS:-$(nproc)}"
  await_compile "$dae_compile" precompile_wait "$OUT/precompile.log"
  stage train_dae $PY -m daetalker_jax.train --config "$DAE_CONFIG" --workdir "$OUT/dae" --config.data_dir="$OUT/data" \
      --config.num_steps="$DAE_STEPS" --config.seed="${SEED:-0}" ${DAE_ARGS:-}
  stage extract $PY -m daetalker_jax.extract --data "$OUT/data" --dae "$OUT/dae"
  await_compile "$s2l_compile" precompile_s2l_wait "$OUT/precompile_s2l.log"
  stage train_s2l $PY -m daetalker_jax.train --config "$S2L_CONFIG" --workdir "$OUT/s2l" --config.data_dir="$OUT/data" \
      --config.num_steps="$S2L_STEPS" --config.seed="${SEED:-0}" ${S2L_ARGS:-}
}

# `wait_for PID`: waits for a process that is not this shell's child (a sibling background job).
wait_for() { while kill -0 "$1" 2>/dev/null; do sleep 1; done; }

# `await_compile PID NAME LOG`: waits for a precompile (none if PID is empty), appending "NAME seconds" to
# $OUT/timings.txt; a failed one only costs time, as training then compiles its step itself.
await_compile() {
  [ -n "$1" ] || return 0
  local t0=$SECONDS
  wait "$1" || echo "a precompile failed (see $3); training compiles that step itself"
  echo "$2 $(( SECONDS - t0 ))" >> "$OUT/timings.txt"
  tail -n 1 "$3"
}

# `stage NAME cmd...`: runs cmd and appends "NAME seconds" to $OUT/timings.txt.
stage() {
  local name=$1 t0=$SECONDS
  shift
  "$@"
  mkdir -p "$OUT"
  echo "$name $(( SECONDS - t0 ))" >> "$OUT/timings.txt"
}
