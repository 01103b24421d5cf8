#!/usr/bin/env bash
# Post-training compression table (BENCHMARKS.md, "Bringing your own model"): every lathe compress
# setting on each model file given as NAME:PATH, printing the test accuracy before and after.
#   bench/ptq-table.sh lenet5:runs/mnist-lenet5/model.arrow resnet20:runs/fashion-resnet20/model.arrow
# Writes ptq-NAME-SETTING.arrow in the current folder; uses bin/lathe (make build).
set -eu
L=${LATHE:-$(cd "$(dirname "$0")/.." && pwd)/bin/lathe}
for m in "$@"; do
  n=${m%%:*}; f=${m#*:}
  for cfg in "w8a8:--bits 8 --activations 8" "w8a8-pct:--bits 8 --activations 8 --range percentile" \
             "w8a8-mse:--bits 8 --activations 8 --range mse" "w4-rtn:--bits 4" "w4-gptq:--bits 4 --gptq" \
             "w3-rtn:--bits 3" "w3-gptq:--bits 3 --gptq" "s50-mag:--prune magnitude --sparsity 0.5" \
             "s50-sgpt:--prune sparsegpt --sparsity 0.5" "nm24-mag:--prune magnitude --nm 2:4" \
             "nm24-sgpt:--prune sparsegpt --nm 2:4"; do
    c=${cfg%%:*}; a=${cfg#*:}
    echo "== $n $c: $a"
    # shellcheck disable=SC2086
    /usr/bin/time -f "%e s" "$L" compress "$f" -o "ptq-$n-$c.arrow" $a 2>&1 | grep -v "^  "
  done
done
