#!/usr/bin/env bash
# CharLM training speed beside PyTorch's, A B A B in one run on one machine.
#   bench/charlm-speed.sh [ROUNDS]   (default 2)
# lathe: go test -bench StepCharLMB32 (the anchor's CharLM: context 128, width 128, 4 heads,
# 2 blocks; AdamW, batch 32 windows of 128 bytes) with its default engine (2 threads).
# PyTorch: ../shared/bench/torch-anchor.sh --only charlm (charlm_train_b32x128, tokens/s).
# Prints every measurement in tokens/s, then each round's ratio and the medians'.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
anchor=${TORCH_ANCHOR:-../shared/bench/torch-anchor.sh}
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go test -c -o "$out/trainer.test" ./trainer/
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE"
for r in $(seq "$rounds"); do
  "$out/trainer.test" -test.run XXX -test.bench 'StepCharLMB32$' -test.benchtime 40x |
    awk -v r="$r" '/^Benchmark/{for(i=1;i<=NF;i++) if($(i+1)=="samples/s") print "lathe", r, $i*128}' | tee -a "$out/all"
  "$anchor" --only charlm 2>/dev/null | awk -v r="$r" '$1=="charlm_train_b32x128"{print "torch", r, $2}' | tee -a "$out/all"
done
median() { sort -n | awk '{a[NR]=$1} END{if(NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
l=$(awk '$1=="lathe"{print $3}' "$out/all" | median)
t=$(awk '$1=="torch"{print $3}' "$out/all" | median)
awk '$1=="lathe"{a[$2]=$3} $1=="torch"{b[$2]=$3} END{for(r in a) if(r in b) printf "round %s ratio %.2f\n", r, a[r]/b[r]}' "$out/all" | sort
echo "median CharLM b32x128: lathe $l tokens/s, PyTorch $t tokens/s, ratio $(awk -v a="$l" -v b="$t" 'BEGIN{printf "%.2f", a/b}')"
