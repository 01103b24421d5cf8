#!/usr/bin/env bash
# Kills a real coordinator process with SIGKILL part-way through a recipe,
# resumes it, and checks that the final weights are bit-identical to an
# uninterrupted run of the same recipe (lathe inspect's weights_sha256 of
# model.arrow and of the last training checkpoint).
#
#   bench/resume-check.sh RECIPE KILL_AFTER_SECONDS [-var k=v ...]
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=$1 kill_after=$2
shift 2
make build >/dev/null
out=$(mktemp -d)
digest() { ./bin/lathe inspect "$1" --json | sed -n 's/.*"weights_sha256": "\(.*\)".*/\1/p'; }
last() { ls "$1"/checkpoints/step-*.arrow | tail -1; }

./bin/coordinator --recipe "$recipe" "$@" --run-dir "$out/full" --no-progress --threads 2 >"$out/full.log" 2>&1
./bin/coordinator --recipe "$recipe" "$@" --run-dir "$out/killed" --no-progress --threads 2 --checkpoint-every-steps 50 >"$out/killed.log" 2>&1 &
pid=$!
sleep "$kill_after"
if ! kill -KILL $pid 2>/dev/null; then
  echo "the run finished before ${kill_after}s; choose an earlier kill time (logs in $out)"; exit 1
fi
wait $pid 2>/dev/null || true
echo "killed after ${kill_after}s; checkpoints left: $(ls "$out/killed/checkpoints" 2>/dev/null | tr '\n' ' ')"
./bin/coordinator --recipe "$recipe" "$@" --run-dir "$out/killed" --no-progress --resume --checkpoint-every-steps 50 >"$out/resumed.log" 2>&1
echo "resumed from step $(sed -n 's/.*"resumed_from_step": \([0-9]*\).*/\1/p' "$out/killed/summary.json")"
a=$(digest "$out/full/model.arrow") b=$(digest "$out/killed/model.arrow")
c=$(digest "$(last "$out/full")") d=$(digest "$(last "$out/killed")")
echo "model.arrow      uninterrupted $a"
echo "                 resumed       $b"
echo "last checkpoint  uninterrupted $c"
echo "                 resumed       $d"
if [ "$a" = "$b" ] && [ "$c" = "$d" ]; then echo "bit-identical"; rm -rf "$out"; else echo "DIFFERENT (runs kept in $out)"; exit 1; fi
