#!/usr/bin/env bash
# Two builds of the coordinator side by side on one cluster job, A B A B: one epoch of a recipe on
# 2 local workers, samples/s and wall time of each run, its messages_rejected and weights digest.
#
#   bench/cluster-ab.sh OLD_COORDINATOR [RECIPE] [ROUNDS]
#
# OLD_COORDINATOR is another build's bin/coordinator (e.g. from `git worktree add /tmp/old REV`
# and `make -C /tmp/old build`); the new one is this tree's. RECIPE defaults to
# recipes/mnist-teacher.hcl, ROUNDS to 2.
set -euo pipefail
cd "$(dirname "$0")/.."
old=$1 recipe=${2:-recipes/mnist-teacher.hcl} rounds=${3:-2}
make build >/dev/null
for r in $(seq "$rounds"); do
  for b in old new; do
    bin=./bin/coordinator
    [ "$b" = old ] && bin=$old
    d=$(mktemp -d)
    start=$(date +%s.%N)
    "$bin" --recipe "$recipe" -var epochs=1 --workers 2 --run-dir "$d" --no-progress --log-level warn >/dev/null 2>&1
    end=$(date +%s.%N)
    sps=$(sed -n 's/.*"samples_per_second": \([0-9.]*\).*/\1/p' "$d/summary.json" | head -1)
    rej=$(sed -n 's/.*"messages_rejected": \([0-9]*\).*/\1/p' "$d/summary.json" | head -1)
    sha=$(./bin/lathe inspect "$d/model.arrow" --json | sed -n 's/.*"weights_sha256": "\(.*\)".*/\1/p')
    echo "$r $b samples/s=$sps wall=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}') rejected=$rej sha=${sha:0:12}"
    rm -rf "$d"
  done
done
