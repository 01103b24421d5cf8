#!/usr/bin/env bash
# The paired distillation experiment: the flagship recipe (LeNet-300-100,
# AGP to 92 %, QAT 8 → 6 → 4 bits) with and without distillation from the
# same trained teacher, over several seeds; prints test accuracy per seed,
# the paired differences, their mean and standard deviation.
#
#   bench/kd-paired.sh TEACHER_MODEL_ARROW [SEEDS (default 5)] [-var k=v ...]
set -euo pipefail
cd "$(dirname "$0")/.."
teacher=$(realpath "$1") seeds=${2:-5}
shift; [ $# -gt 0 ] && shift
make build >/dev/null
out=$(mktemp -d)
flag=recipes/mnist-lenet300-kd-prune-qat.hcl
# With KD: the teacher block reads the trained teacher; without: no teacher, no distill.
awk -v t="$teacher" '/^  teacher \{/{print "  teacher {\n    file = \"" t "\"\n  }"; skip=1; next} skip&&/^  \}/{skip=0; next} !skip' $flag \
  | sed 's/seed       = 1/seed       = var.seed/' | sed '1i variable "seed" {\n  default = 1\n}' >"$out/kd.hcl"
awk '/^  (teacher|distill) \{/{skip=1; next} skip&&/^  \}/{skip=0; next} !skip' "$out/kd.hcl" >"$out/plain.hcl"
acc() { sed -n 's/^  "test_accuracy": \(.*\),$/\1/p' "$1/summary.json" | head -1; }
printf "seed  kd       plain    kd-plain\n"
diffs=()
for s in $(seq 1 "$seeds"); do
  ./bin/coordinator --recipe "$out/kd.hcl" -var seed=$s "$@" --run-dir "$out/kd-$s" --no-progress >"$out/kd-$s.log" 2>&1
  ./bin/coordinator --recipe "$out/plain.hcl" -var seed=$s "$@" --run-dir "$out/plain-$s" --no-progress >"$out/plain-$s.log" 2>&1
  a=$(acc "$out/kd-$s") b=$(acc "$out/plain-$s")
  d=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%+.4f", a-b}')
  diffs+=("$d")
  printf "%-5s %-8s %-8s %s\n" "$s" "$a" "$b" "$d"
done
printf "%s\n" "${diffs[@]}" | awk '{s+=$1; q+=$1*$1; n++} END{m=s/n; sd=(n>1)?sqrt((q-n*m*m)/(n-1)):0; printf "mean difference %+.4f, sd %.4f, n %d (runs in '"$out"')\n", m, sd, n}'
