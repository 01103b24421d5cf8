#!/usr/bin/env bash
# What a change does to trained bits: runs every shipped recipe shortened (2 epochs, 4 for the one recipe that needs them, 1 teacher
# epoch where the recipe trains a teacher), on the CPU path with 1 compute thread, plus one
# cluster run (the flagship shortened, --workers 2), and compares each model file's
# weights_sha256 (lathe inspect) with the ones recorded in bench/digests.txt.
#
#   bench/digests.sh              compare with bench/digests.txt (exit 1 on any difference)
#   bench/digests.sh --record     write bench/digests.txt anew from this build
#   ONLY='lenet300 kmeans' bench/digests.sh    only the runs whose name contains a word
#   JOBS=2 bench/digests.sh       runs at once (default 2: each uses one compute thread)
#
# Digests hold on one machine, thread count and OpenBLAS core type (its bits depend on all three):
# compare on the machine the file was recorded on, or record the old build's digests first, then
# the new one's. The core type is pinned to Haswell here (this machine's environment default), so
# that a shell exporting another one does not make every run differ.
set -euo pipefail
export OPENBLAS_CORETYPE=Haswell
cd "$(dirname "$0")/.."
mode=compare
[ "${1:-}" = --record ] && mode=record
expected=bench/digests.txt
make build >/dev/null
out=$(mktemp -d)
jobs=${JOBS:-2}

# One line per run: its name and the coordinator's arguments (4 epochs where 2 leave no room for
# a step the recipe places after the others: thinning after pruning).
runs() {
  for r in recipes/*.hcl; do
    name=$(basename "$r" .hcl)
    # A target search chooses by the latencies it measures: not a pure function of its recipe
    # (its chosen.hcl is; run/target_test.go checks that it reproduces the chosen weights).
    case $name in *-target) continue ;; esac
    epochs=2
    [ "$name" = mnist-lenet5-filters ] && epochs=4
    args="--recipe $r -var epochs=$epochs"
    grep -q '^variable "teacher_epochs"' "$r" && args="$args -var teacher_epochs=1"
    echo "$name $args"
  done
  echo "cluster-mnist-lenet300-kd-prune-qat --recipe recipes/mnist-lenet300-kd-prune-qat.hcl -var epochs=2 -var teacher_epochs=1 --workers 2"
}

selected() {
  [ -z "${ONLY:-}" ] && return 0
  for w in $ONLY; do case "$1" in *"$w"*) return 0 ;; esac; done
  return 1
}

one() { # name args...
  local name=$1; shift
  if ./bin/coordinator "$@" --run-dir "$out/$name" --threads 1 --no-progress --log-level warn >"$out/$name.log" 2>&1; then
    # The student's model file, then every teacher trained inside the run.
    for m in "$out/$name/model.arrow" "$out/$name"/teacher*/model.arrow; do
      [ -f "$m" ] || continue
      rel=${m#"$out/$name/"}
      d=$(./bin/lathe inspect "$m" --json | sed -n 's/.*"weights_sha256": "\(.*\)".*/\1/p')
      echo "$name/${rel%/model.arrow} $d"
    done
  else
    echo "$name FAILED (log: $out/$name.log)"
  fi
}
export -f one
export out

runs | while read -r name args; do if selected "$name"; then echo "$name $args"; fi; done |
  xargs -P "$jobs" -L 1 bash -c 'one "$@"' _ | sed 's|/model.arrow||' | sort >"$out/digests.txt"

if grep -q FAILED "$out/digests.txt"; then
  cat "$out/digests.txt"; echo "a run failed (logs in $out)"; exit 1
fi
if [ "$mode" = record ]; then
  # Runs left out by ONLY keep their recorded digests.
  keep=""
  [ -n "${ONLY:-}" ] && [ -f "$expected" ] && keep=$(grep -v '^#' "$expected" | while read -r k d; do
    grep -q "^$k " "$out/digests.txt" || echo "$k $d"; done)
  { echo "# weights_sha256 of bench/digests.sh's shortened runs ($(date -u +%F), $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), 1 thread, OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE)"
    { [ -n "$keep" ] && echo "$keep"; cat "$out/digests.txt"; } | sort; } >"$expected"
  cat "$expected"; rm -rf "$out"; exit 0
fi
status=0
while read -r key digest; do
  want=$(awk -v k="$key" '$1==k{print $2}' "$expected")
  if [ -z "$want" ]; then echo "new   $key $digest"
  elif [ "$want" = "$digest" ]; then echo "same  $key"
  else echo "DIFF  $key $want -> $digest"; status=1; fi
done <"$out/digests.txt"
[ "$status" = 0 ] && rm -rf "$out" || echo "runs kept in $out"
exit $status
