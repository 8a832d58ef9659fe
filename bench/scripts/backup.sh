#!/bin/bash
# backup.sh BIN_DIR OUT: fill 1 GiB, then quiet and backup chat runs (3 each), one host
set -u
B=$(realpath "$1"); OUT=$2; : > "$OUT"
D=${WORK:-/tmp/roomhost-bench}/bk; rm -rf $D; mkdir -p $D
conf() { cat > $D/roomhost.toml <<EOC
listen = "127.0.0.1:8792"
data = "$D/roomhost.redb"
admin_token = "tok"
durability = "$1"
[classes.probe]
component = "$B/probe.wasm"
[classes.chat-room]
component = "builtin:chat-room"
vars = { RATE_LIMIT = "off" }
[[routes]]
path = "/probe/{name}/*"
object = "probe"
max_name_chars = 32
[[routes]]
path = "/api/room/{name}/*"
object = "chat-room"
max_name_chars = 32
EOC
}
conf none
$B/roomhost serve --config $D/roomhost.toml > $D/fill.log 2>&1 & pid=$!; sleep 1.5
t=$(date +%s.%N); python3 "$(dirname "$0")/fill.py" 127.0.0.1:8792 1024; echo "fill $(echo "$(date +%s.%N) - $t" | bc) s" >> $OUT
kill $pid; wait $pid 2>/dev/null
ls -l $D/roomhost.redb >> $OUT
conf immediate
$B/roomhost serve --config $D/roomhost.toml > $D/host.log 2>&1 & pid=$!; sleep 2
export ROOMHOST_ADMIN_TOKEN=tok
rss() { grep VmRSS /proc/$pid/status; }
echo "rss start: $(rss)" >> $OUT
for run in 1 2 3; do
  echo "== quiet $run" >> $OUT
  $B/loadgen --host 127.0.0.1:8792 --host-pid $pid fanout --clients 200 --rooms 20 --senders 2 --messages 200 --interval-ms 50 >> $OUT 2>&1
  echo "== backup $run" >> $OUT
  rm -f $D/snap.redb
  ( sleep 2; s=$(date +%s.%N); $B/roomhost backup --url http://127.0.0.1:8792 $D/snap.redb > $D/backup$run.log 2>&1; echo "backup rc=$? took $(echo "$(date +%s.%N) - $s" | bc) s" >> $OUT ) &
  bp=$!
  st0=$(head -1 /proc/stat)
  $B/loadgen --host 127.0.0.1:8792 --host-pid $pid fanout --clients 200 --rooms 20 --senders 2 --messages 200 --interval-ms 50 >> $OUT 2>&1
  wait $bp
  st1=$(head -1 /proc/stat)
  echo "stat0: $st0" >> $OUT; echo "stat1: $st1" >> $OUT
  echo "rss after backup $run: $(rss)" >> $OUT
  cat $D/backup$run.log >> $OUT
done
grep "snapshot" $D/host.log >> $OUT
kill $pid; wait $pid 2>/dev/null
