#!/usr/bin/env bash
# Inference speed beside PyTorch, A B A B: the anchor's sparse section
# (LeNet-300-100 with 90 % of its weights zero, dense / CSR / COO, batch 1
# and 256) and lathe bench on the given model files, twice each.
#
#   bench/infer-speed.sh MODEL.arrow [MODEL.arrow ...]
set -euo pipefail
cd "$(dirname "$0")/.."
make build >/dev/null
for round in 1 2; do
  echo "== round $round: PyTorch"
  ../shared/bench/torch-anchor.sh --only sparse --threads 2 2>&1 | grep -v '^#' || true
  for m in "$@"; do
    echo "== round $round: lathe $m"
    ./bin/lathe bench "$m" --batch 1,256 --seconds 2
  done
done
