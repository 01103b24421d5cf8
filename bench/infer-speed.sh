#!/usr/bin/env bash
# Inference speed beside PyTorch, A B A B: an anchor section (default
# sparse: LeNet-300-100 with 90 % of its weights zero, dense / CSR / COO,
# batch 1 and 256; ANCHOR=cnn: the LeNet-5s, trained and run) and lathe
# bench on the given model files, twice each.
#
#   [ANCHOR=section] bench/infer-speed.sh MODEL.arrow [MODEL.arrow ...]
set -euo pipefail
cd "$(dirname "$0")/.."
make build >/dev/null
for round in 1 2; do
  echo "== round $round: PyTorch"
  ../shared/bench/torch-anchor.sh --only "${ANCHOR:-sparse}" --threads 2 2>&1 | grep -v '^#' | grep -v Warning || true
  for m in "$@"; do
    echo "== round $round: lathe $m"
    ./bin/lathe bench "$m" --batch 1,256 --seconds 2
  done
done
