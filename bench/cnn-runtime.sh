#!/usr/bin/env bash
# The CNN runtime beside onnxruntime, A B A B: each model file's ONNX export (lathe export) in
# onnxruntime (bench/ort-latency.mjs: full graph optimizations, the anchor users deploy with),
# then lathe bench on the model file itself, same threads and batch sizes, twice each.
#
#   bench/cnn-runtime.sh MODEL.arrow [MODEL.arrow ...]
#   THREADS=1 BATCH=1,64 SECONDS_PER=2 bench/cnn-runtime.sh …   (defaults: 1, 1,64, 2)
#   ORT_ARGS="--dtype int64 --shape 64" bench/cnn-runtime.sh …     (text models: byte ids)
#
# onnxruntime-node comes from infer/testdata/ort (make deps installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
make build >/dev/null
threads=${THREADS:-1}
batch=${BATCH:-1,64}
seconds=${SECONDS_PER:-2} # (not SECONDS: bash counts its own in it)
export OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-SkylakeX}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# A model's name: its folder's and file's (two runs' model.arrow stay apart).
name() { echo "$(basename "$(dirname "$1")")-$(basename "$1" .arrow)"; }
for m in "$@"; do
  ./bin/lathe export --onnx "$out/$(name "$m").onnx" "$m" >/dev/null
done
for round in 1 2; do
  for m in "$@"; do
    name=$(name "$m")
    echo "== round $round: onnxruntime $name (threads $threads)"
    (cd infer/testdata/ort && node ../../../bench/ort-latency.mjs "$out/$name.onnx" --batch "$batch" --threads "$threads" --seconds "$seconds" ${ORT_ARGS:-})
    echo "== round $round: lathe $name (threads $threads)"
    ./bin/lathe bench "$m" --batch "$batch" --threads "$threads" --seconds "$seconds" | grep -E '^ +(batch|[0-9]+ )' | cut -c1-60
  done
done
