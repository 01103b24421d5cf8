#!/usr/bin/env bash
# Step time against the number of workers: a stock nats-server (JetStream,
# token), the coordinator on it directly, N worker processes connected
# through bench/latency-proxy (DELAY each way; 0 connects them directly),
# one epoch of a recipe, one run per N. Prints samples/s, wall seconds, the
# mean step time and the bytes each worker sent and received per step
# (mean over workers) from each summary.json.
#
#   [DELAY=1ms] [WORKERS="1 2 4 8"] bench/cluster-scale.sh [RECIPE]
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=${1:-recipes/mnist-lenet300-agp.hcl}
make build >/dev/null
go build -o bin/latency-proxy ./bench/latency-proxy
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
head -c 24 /dev/urandom | base64 > "$tmp/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
nats=$(command -v nats-server || echo /usr/sbin/nats-server)
"$nats" -a 127.0.0.1 -p "$port" -js -sd "$tmp/js" --auth "$(cat "$tmp/token")" >"$tmp/nats.log" 2>&1 &
sleep 1
wurl="nats://127.0.0.1:$port"
if [ "${DELAY:-0}" != 0 ]; then
  pport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  bin/latency-proxy -listen "127.0.0.1:$pport" -to "127.0.0.1:$port" -delay "$DELAY" 2>"$tmp/proxy.log" &
  sleep 0.5
  wurl="nats://127.0.0.1:$pport"
fi
echo "recipe $recipe, 1 epoch; workers through ${DELAY:-no} added delay each way"
printf "%8s %12s %8s %14s %12s %12s\n" workers samples/s wall_s "ms per step" "sent/step" "recv/step"
for n in ${WORKERS:-1 2 4 8}; do
  dir="$tmp/run-$n"
  pids=()
  for k in $(seq 1 "$n"); do
    bin/worker --nats "$wurl" --token-file "$tmp/token" --name "w$k" --log-level warn 2>>"$tmp/workers.log" &
    pids+=($!)
  done
  bin/coordinator --recipe "$recipe" -var epochs=1 --nats "nats://127.0.0.1:$port" --token-file "$tmp/token" \
    --workers 0 --min-workers "$n" --run-dir "$dir" --no-progress --log-level warn 2>>"$tmp/coord.log" >/dev/null \
    || { echo "coordinator failed with $n workers:"; tail -20 "$tmp/coord.log" "$tmp/workers.log"; exit 1; }
  wait "${pids[@]}" || true # the workers leave when the coordinator ends the job
  python3 - "$dir/summary.json" "$n" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
c = s.get("cluster") or {}
steps = s["steps"]
print("%8s %12.0f %8.1f %14.2f %12.0f %12.0f" % (sys.argv[2], s["samples_per_second"], s["wall_seconds"],
      1000 * s["train_seconds"] / steps, c.get("bytes_sent_per_step", 0), c.get("bytes_received_per_step", 0)))
PY
done
