#!/usr/bin/env bash
# A Cloud TPU VM pod slice: the same command on every worker through gcloud; JAX finds the pod by itself.
# Needs gcloud with access to the TPU, and the data and --workdir on storage that every worker reads and
# writes at the same path (Filestore/NFS or a gcsfuse mount): each worker writes its part of a checkpoint.
# Usage:
#   TPU=my-pod ZONE=us-central2-b bash launch/tpu_pod.sh setup https://github.com/you/daetalker-jax.git
#   TPU=my-pod ZONE=us-central2-b bash launch/tpu_pod.sh train --config configs/dae.py --workdir /mnt/runs/dae \
#       --config.data_dir=/mnt/data --config.batch_size=256
# Knobs: PROJECT (gcloud project), DIR (checkout folder on the workers, default daetalker-jax).
set -euo pipefail
: "${TPU:?set TPU=<TPU VM name>}" "${ZONE:?set ZONE=<its zone>}"
DIR=${DIR:-daetalker-jax}
on_all() {
  gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" ${PROJECT:+--project "$PROJECT"} --worker=all --command "$1"
}
case "${1:-}" in
  setup)
    repo=${2:?usage: bash launch/tpu_pod.sh setup REPOSITORY_URL}
    on_all "set -e; test -d $DIR || git clone $repo $DIR; cd $DIR; git pull --ff-only; ACCEL=tpu bash launch/setup_env.sh" ;;
  train)
    shift
    on_all "cd $DIR && .venv/bin/python -m daetalker_jax.train $(printf '%q ' "$@")" ;;
  *)
    echo "usage: TPU=.. ZONE=.. bash launch/tpu_pod.sh setup REPOSITORY_URL | train --config .. --workdir .." >&2
    exit 2 ;;
esac
