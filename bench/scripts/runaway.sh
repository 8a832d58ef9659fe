#!/bin/bash
# runaway.sh BIN_DIR OUT: loadgen runaway with 0/1/4/16 runaways, 3 runs each, fresh host per run
# (env: NS, RUNS, SECS (30), INTERVAL_MS (10), WORK)
set -u
B=$(realpath "$1"); OUT=$2; : > "$OUT"
for n in ${NS:-0 1 4 16}; do for run in ${RUNS:-1 2 3}; do
  rm -rf ${WORK:-/tmp/roomhost-bench}/rw && mkdir -p ${WORK:-/tmp/roomhost-bench}/rw
  cat > ${WORK:-/tmp/roomhost-bench}/rw/roomhost.toml <<EOC
listen = "127.0.0.1:8791"
data = "${WORK:-/tmp/roomhost-bench}/rw/roomhost.redb"
admin_token = "tok"
[classes.probe]
component = "$B/probe.wasm"
[classes.chat-room]
component = "builtin:chat-room"
vars = { RATE_LIMIT = "off" }
[[routes]]
path = "/probe/{name}/*"
object = "probe"
[[routes]]
path = "/api/room/{name}/*"
object = "chat-room"
[limits]
max_event_cpu_ms = 1000
EOC
  $B/roomhost serve --config ${WORK:-/tmp/roomhost-bench}/rw/roomhost.toml > ${WORK:-/tmp/roomhost-bench}/rw/host.log 2>&1 &
  pid=$!; sleep 1.5
  echo "== runaways=$n run=$run" >> $OUT
  $B/loadgen --host 127.0.0.1:8791 --host-pid $pid --timeout-secs 300 runaway --runaways $n --secs ${SECS:-30} --interval-ms ${INTERVAL_MS:-10} --admin-token tok --json >> $OUT 2>&1
  kill $pid; wait $pid 2>/dev/null
done; done
