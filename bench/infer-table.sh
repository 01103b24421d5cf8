#!/usr/bin/env bash
# The runtime issue's table, A B A B: PyTorch's anchor sections (default
# sparse,quant: LeNet-300-100 dense / CSR / dynamic int8; ANCHOR=cnn for the
# LeNet-5s), then `lathe bench` on each model file, one line per model:
# p50 latency at batch 1 and 256, samples/s at 256, the kernels chosen —
# and the same model with every layer forced to the dense GEMM.
#
#   [ANCHOR=sections] bench/infer-table.sh LABEL=MODEL.arrow [LABEL=MODEL.arrow ...]
set -euo pipefail
cd "$(dirname "$0")/.."
make build >/dev/null
for round in 1 2; do
  echo "== round $round: PyTorch (${ANCHOR:-sparse,quant})"
  ../shared/bench/torch-anchor.sh --only "${ANCHOR:-sparse,quant}" --threads 2 2>&1 | grep -v '^#' | grep -v Warning | grep -v 'Wcsr =' || true
  echo "== round $round: lathe"
  for arg in "$@"; do
    label=${arg%%=*} m=${arg#*=}
    for k in "" dense; do
    ./bin/lathe bench "$m" --batch 1,256 --seconds 2 --json ${k:+--kernel $k} | python3 -c '
import json, sys
b = json.load(sys.stdin)
r = {x["batch"]: x for x in b["results"]}
one, big = r[1], r[256]
print("%-28s b1 p50 %9.1f us [%s]   b256 p50 %9.1f us, %9.0f samples/s [%s]" % (sys.argv[1],
      one["p50_us"], ",".join(one["kernels"]), big["p50_us"], big["samples_per_second"], ",".join(big["kernels"])))
' "$label${k:+ (all dense)}"
    done
  done
done
