#!/usr/bin/env bash
# Training speed of lathe's step beside PyTorch's, A B A B in one run on one machine.
#   bench/train-speed.sh [ROUNDS]   (default 2)
# lathe: go test -bench 'StepLeNet300B256|StepLeNet5B256' (forward, backward, SGD-momentum
# update; random inputs, float32) with its default engine (OpenBLAS through purego, 2 threads).
# PyTorch: ../shared/bench/torch-anchor.sh --only mlp,cnn (mlp_train_b256, lenet5_train_b256).
# Prints every measurement, then medians and lathe/PyTorch ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
anchor=${TORCH_ANCHOR:-../shared/bench/torch-anchor.sh}
out=$(mktemp -d)
go test -c -o "$out/trainer.test" ./trainer/
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-auto}"
for r in $(seq "$rounds"); do
  "$out/trainer.test" -test.run XXX -test.bench 'StepLeNet300B256|StepLeNet5B256' -test.benchtime 3s |
    awk -v r="$r" '/^Benchmark/{n=$1; sub(/-[0-9]+$/,"",n); for(i=1;i<=NF;i++) if($(i+1)=="samples/s") print "lathe", r, n, $i}' | tee -a "$out/all"
  "$anchor" --only mlp,cnn 2>/dev/null | awk -v r="$r" '/_train_b256 /{print "torch", r, $1, $2}' | tee -a "$out/all"
done
median() { sort -n | awk '{a[NR]=$1} END{if(NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
l3=$(awk '$3=="BenchmarkStepLeNet300B256"{print $4}' "$out/all" | median)
t3=$(awk '$3=="mlp_train_b256"{print $4}' "$out/all" | median)
l5=$(awk '$3=="BenchmarkStepLeNet5B256"{print $4}' "$out/all" | median)
t5=$(awk '$3=="lenet5_train_b256"{print $4}' "$out/all" | median)
echo "median LeNet-300-100 b256: lathe $l3 samples/s, PyTorch $t3 samples/s, ratio $(awk -v a="$l3" -v b="$t3" 'BEGIN{printf "%.2f", a/b}')"
echo "median LeNet-5       b256: lathe $l5 samples/s, PyTorch $t5 samples/s, ratio $(awk -v a="$l5" -v b="$t5" 'BEGIN{printf "%.2f", a/b}')"
# Per-round ratios (each lathe measurement against the PyTorch one right after it): the machine's
# speed drifts between rounds, so paired ratios are steadier than ratios of medians.
for m in "BenchmarkStepLeNet300B256 mlp_train_b256 LeNet-300-100" "BenchmarkStepLeNet5B256 lenet5_train_b256 LeNet-5"; do
  set -- $m
  awk -v l="$1" -v t="$2" -v name="$3" '$1=="lathe" && $3==l {a[$2]=$4} $1=="torch" && $3==t {b[$2]=$4}
    END {for (r in a) if (r in b) printf "%s round %s ratio %.2f\n", name, r, a[r]/b[r]}' "$out/all" | sort -k3n
done
rm -rf "$out"
