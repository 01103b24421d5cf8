#!/usr/bin/env bash
# Distillation against a baseline tuned on its own: the flagship recipe
# (LeNet-300-100, shifts ±2, AGP to 92 %, QAT 8 → 6 → 4 bits, 30 epochs)
# distilled from a trained 1200-1200 teacher, against the same recipe
# without teacher and distill blocks whose learning rate and weight decay
# were chosen by validation accuracy (the validation split only; the test
# split is never looked at to choose), paired over seeds.
#
#   bench/kd-tuned.sh [coordinator flags, e.g. --device cuda]
#
# Environment: COORD (the coordinator binary, default bin/coordinator),
# OUT (where runs and the report go, default a temporary directory),
# SEEDS (5), TEACHER_EPOCHS (100), TUNE_SEED (1); the grid without KD:
# LRS ("0.02,0.05,0.1,0.2") × WDS ("0,1e-4,3e-4,1e-3"); with KD (TUNE_KD=1,
# the default; 0 keeps the flagship's): KD_LRS ("0.05,0.1") × ALPHAS
# ("0.3,0.5,0.7,0.9") × TEMPS ("2,4") — the same number of runs each.
#
# The teacher is recipes/mnist-teacher.hcl (1200-1200, dropout 0.5/0.2,
# shifts ±2) trained for TEACHER_EPOCHS epochs with plain momentum (the
# recipe's Nesterov line removed: the device path has no Nesterov yet).
# Each arm is tuned on the validation split at one seed with a grid of the
# same size, then both run at every seed with what was chosen.
set -euo pipefail
cd "$(dirname "$0")/.."
COORD=${COORD:-bin/coordinator}
out=${OUT:-$(mktemp -d)}
seeds=${SEEDS:-5} tepochs=${TEACHER_EPOCHS:-100}
lrs=${LRS:-0.02,0.05,0.1,0.2} wds=${WDS:-0,1e-4,3e-4,1e-3} tune=${TUNE_SEED:-1}
mkdir -p "$out"
report="$out/kd-tuned.txt"
: >"$report"
say() { echo "$@" | tee -a "$report"; }
flag=recipes/mnist-lenet300-kd-prune-qat.hcl

grep -v 'nesterov' recipes/mnist-teacher.hcl >"$out/teacher.hcl"
t0=$(date +%s)
"$COORD" --recipe "$out/teacher.hcl" -var epochs="$tepochs" "$@" --run-dir "$out/teacher" --no-progress >"$out/teacher.log" 2>&1
teacher=$(realpath "$out/teacher/model.arrow")
acc() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1/summary.json" "$2"; }
say "teacher: $tepochs epochs, test accuracy $(acc "$out/teacher" test_accuracy), $(( $(date +%s) - t0 )) s"

# The student recipes: the seed a variable; with KD the teacher block reads
# the trained teacher; without, no teacher or distill block and the
# learning rate and weight decay variables to tune.
sed 's/seed       = 1/seed       = var.seed/' $flag | sed '1i variable "seed" {\n  default = 1\n}' >"$out/base.hcl"
awk -v t="$teacher" '/^  teacher \{/{print "  teacher {\n    file = \"" t "\"\n  }"; skip=1; next} skip&&/^  \}/{skip=0; next} !skip' \
  "$out/base.hcl" \
  | sed 's/lr           = 0.05/lr           = var.lr/; s/temperature = 2/temperature = var.temp/; s/alpha       = 0.5/alpha       = var.alpha/' \
  | sed '1i variable "lr" {\n  default = 0.05\n}\nvariable "temp" {\n  default = 2\n}\nvariable "alpha" {\n  default = 0.5\n}' >"$out/kd.hcl"
awk '/^  (teacher|distill) \{/{skip=1; next} skip&&/^  \}/{skip=0; next} !skip' "$out/base.hcl" \
  | sed 's/lr           = 0.05/lr           = var.lr/; s/weight_decay = 1e-4/weight_decay = var.wd/' \
  | sed '1i variable "lr" {\n  default = 0.05\n}\nvariable "wd" {\n  default = 1e-4\n}' >"$out/plain.hcl"

# tune NAME RECIPE SWEEP...: sweeps the recipe at seed TUNE_SEED, prints the
# table, and sets $chosen to the -var flags of the best validation accuracy.
tune() {
  local name=$1 recipe=$2; shift 2
  local sweeps=() vars=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do sweeps+=(--sweep "$1"); vars+=("${1%%=*}"); shift; done
  shift
  local t0=$(date +%s)
  "$COORD" --recipe "$recipe" -var seed="$tune" "${sweeps[@]}" "$@" --run-dir "$out/tune-$name" --no-progress >"$out/tune-$name.log" 2>&1
  say "tuning $name (seed $tune, by validation accuracy; $(( $(date +%s) - t0 )) s):"
  python3 - "$out/tune-$name/sweep.csv" "${vars[@]}" <<'EOF' | tee -a "$report"
import csv, sys
rows, names = list(csv.DictReader(open(sys.argv[1]))), sys.argv[2:]
for r in rows:
    print("  " + " ".join(f"{n}={r[n]:<6}" for n in names) + f" val {float(r['val_accuracy']):.4f}  test {float(r['test_accuracy']):.4f}  {r['error']}")
b = max((r for r in rows if not r['error']), key=lambda r: float(r['val_accuracy']))  # the first of the best
print("chosen: " + " ".join(f"{n}={b[n]}" for n in names) + f" (validation {float(b['val_accuracy']):.4f})")
EOF
  chosen=$(python3 - "$out/tune-$name/sweep.csv" "${vars[@]}" <<'EOF'
import csv, sys
rows, names = list(csv.DictReader(open(sys.argv[1]))), sys.argv[2:]
b = max((r for r in rows if not r['error']), key=lambda r: float(r['val_accuracy']))
print(" ".join(f"-var {n}={b[n]}" for n in names))
EOF
)
}
tune plain "$out/plain.hcl" "lr=$lrs" "wd=$wds" -- "$@"
plainvars=$chosen
kdvars=""
if [ "${TUNE_KD:-1}" = 1 ]; then
  tune kd "$out/kd.hcl" "lr=${KD_LRS:-0.05,0.1}" "alpha=${ALPHAS:-0.3,0.5,0.7,0.9}" "temp=${TEMPS:-2,4}" -- "$@"
  kdvars=$chosen
fi

say "seed  kd ($kdvars)  plain ($plainvars)  kd-plain (test accuracy)"
diffs=()
for s in $(seq 1 "$seeds"); do
  # shellcheck disable=SC2086
  "$COORD" --recipe "$out/kd.hcl" -var seed="$s" $kdvars "$@" --run-dir "$out/kd-$s" --no-progress >"$out/kd-$s.log" 2>&1
  # shellcheck disable=SC2086
  "$COORD" --recipe "$out/plain.hcl" -var seed="$s" $plainvars "$@" --run-dir "$out/plain-$s" --no-progress >"$out/plain-$s.log" 2>&1
  a=$(acc "$out/kd-$s" test_accuracy) b=$(acc "$out/plain-$s" test_accuracy)
  d=$(awk -v a="$a" -v b="$b" 'BEGIN{printf "%+.4f", a-b}')
  diffs+=("$d")
  say "$(printf "%-5s %-8s %-12s %s" "$s" "$a" "$b" "$d")"
done
printf "%s\n" "${diffs[@]}" | awk '{s+=$1; q+=$1*$1; n++} END{m=s/n; sd=(n>1)?sqrt((q-n*m*m)/(n-1)):0; t=(sd>0)?m/(sd/sqrt(n)):0;
  printf "mean difference %+.4f (%.1f fewer test errors per run with KD), sd %.4f, paired t %.2f, n %d\n", m, m*10000, sd, t, n}' | tee -a "$report"
echo "runs in $out"
