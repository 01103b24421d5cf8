#!/usr/bin/env bash
# The cluster's data planes beside PyTorch DDP, A B A B in one run: one epoch of a recipe on 2
# local workers over the peer data plane (--data-plane peer), the same through the NATS server
# (--data-plane nats), and the shared DDP anchor (gloo, 2 processes, same model and global batch).
# Each lathe line gives the run's samples/s (summary.json's samples_per_second: the workers'
# start-up in its first step), its steady samples/s (cluster.steady_samples_per_second: the steps
# after the first 20, as the anchor times a loop after 20 warm-up steps), wall time, the bytes per
# worker and step through the broker and over peer connections, and the weights' digest (the same
# on both planes).
#
#   bench/data-plane.sh [mlp|teacher|kd] [ROUNDS]
#
# mlp is LeNet-300-100 (recipes/mnist-lenet300.hcl), teacher the 784-1200-1200-10 teacher
# (recipes/mnist-teacher.hcl), kd LeNet-300-100 distilling a trained teacher (bench/kd-step.hcl;
# TEACHER=model.arrow names it, else one epoch of mnist-teacher.hcl trains one first); ROUNDS
# defaults to 2. DDP_SECONDS (default 10) is the anchor's timed seconds per measurement. PLANES
# (default "peer nats") are the data planes run; MICRO (default: the job's, 8) the --micro-shards
# counts, each run on every plane (MICRO="8 2": the default beside one micro-shard per worker);
# SYNC (default 64, the coordinator's default) the --sync-every values, each run with every count
# and plane (SYNC="0 64": the coordinator reducing every step beside one that takes the workers'
# state every 64 steps).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-mlp} rounds=${2:-2}
vars=()
case $model in
  mlp) recipe=recipes/mnist-lenet300.hcl ;;
  teacher) recipe=recipes/mnist-teacher.hcl ;;
  kd) recipe=bench/kd-step.hcl ;;
  *) echo "usage: bench/data-plane.sh [mlp|teacher|kd] [ROUNDS]" >&2; exit 2 ;;
esac
anchor=${ANCHOR:-../shared/bench/torch-ddp.sh}
make build >/dev/null
if [ "$model" = kd ]; then
  teacher=${TEACHER:-}
  if [ -z "$teacher" ]; then
    tdir=$(mktemp -d)
    trap 'rm -rf "$tdir"' EXIT
    echo "training a teacher for one epoch (TEACHER=model.arrow skips this)" >&2
    ./bin/coordinator --recipe recipes/mnist-teacher.hcl -var epochs=1 --run-dir "$tdir/teacher" \
      --no-progress --log-level warn >/dev/null 2>&1
    teacher=$tdir/teacher/model.arrow
  fi
  vars=(-var "teacher=$(realpath "$teacher")")
fi
field() { sed -n "s/.*\"$1\": \\([0-9.e+]*\\).*/\\1/p" "$2" | head -1; }
for r in $(seq "$rounds"); do
  for sync in ${SYNC:-64}; do
  for micro in ${MICRO:-default}; do
    for plane in ${PLANES:-peer nats}; do
      d=$(mktemp -d)
      ms=(--sync-every "$sync") name=lathe-$plane
      if [ "$micro" != default ]; then ms+=(--micro-shards "$micro") name=$name-ms$micro; fi
      if [ "$sync" != 64 ]; then name=$name-sync$sync; fi
      start=$(date +%s.%N)
      ./bin/coordinator --recipe "$recipe" "${vars[@]}" -var epochs=1 -var batch=128 --workers 2 --data-plane "$plane" \
        "${ms[@]}" --run-dir "$d" --no-progress --log-level warn >/dev/null 2>&1
      end=$(date +%s.%N)
      sha=$(./bin/lathe inspect "$d/model.arrow" --json | sed -n 's/.*"weights_sha256": "\(.*\)".*/\1/p')
      printf '%s %s samples/s=%.0f steady=%.0f wall=%.1f broker_bytes_per_step=%.0f peer_bytes_per_step=%.0f sha=%s\n' \
        "$r" "$name" "$(field samples_per_second "$d/summary.json")" "$(field steady_samples_per_second "$d/summary.json")" \
        "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" \
        "$(field broker_bytes_per_step "$d/summary.json")" "$(field peer_bytes_per_step "$d/summary.json")" "${sha:0:12}"
      rm -rf "$d"
    done
  done
  done
  ddp=$("$anchor" --model "$model" --batch 128 --workers 2 --seconds "${DDP_SECONDS:-10}" 2>/dev/null | sed -n "s/^ddp_${model}_w2 \\([0-9.]*\\).*/\\1/p")
  echo "$r ddp-gloo-w2 samples/s=$ddp"
done
