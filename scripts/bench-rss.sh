#!/usr/bin/env bash
# tollgate's memory while a 2-million-row SELECT (about 200 MB on the wire) streams through it:
# its resident set before the query, its peak (VmHWM) after, and the same with a client that
# reads slowly (the proxy must slow the server down, not buffer). Recording is on: every frame
# goes to a SQLite store, as under `tollgate dev` (the record stage's queue is bounded in bytes:
# a writer that falls behind slows the relay down, it is not buffered for).
#
# Usage: scripts/bench-rss.sh [rows]
#        BENCH_AUDIT=0 scripts/bench-rss.sh ...   (no store: the relay alone)
#        TOLLGATE_BIN=FILE scripts/bench-rss.sh   (another build, e.g. an earlier commit's)
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-2000000}
PORT=25433
export PGSSLMODE=disable
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

[ -n "${TOLLGATE_BIN:-}" ] || cargo build --release --quiet
bin=${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-target}/release/tollgate}
echo "agent-secret" >"$work/agent-pw"
audit=
if [ "${BENCH_AUDIT:-1}" = 1 ]; then
  "$bin" audit keygen --out "$work/signing.pem" >/dev/null
  audit="audit: { sqlite: $work/audit.db, signing_key: { file: $work/signing.pem } }"
fi
cat >"$work/tollgate.yaml" <<EOF
listen: { postgres: 127.0.0.1:$PORT }
$audit
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: { method: scram-sha-256, user: agent, password: { file: $work/agent-pw } }
EOF

kib() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$pid/status"; }
query="select g, repeat('x', 90) as filler from generate_series(1, $ROWS) g"
url="host=127.0.0.1 port=$PORT user=agent dbname=test"

start() {
  rm -f "$work"/audit.db*
  TOLLGATE_LOG=warn "$bin" serve --config "$work/tollgate.yaml" 2>"$work/log" &
  pid=$!
  for _ in $(seq 1 50); do
    PGPASSWORD=agent-secret psql "$url" -qAtc 'select 1' >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "tollgate did not start" >&2
  cat "$work/log" >&2
  exit 1
}

echo "recording: $([ -n "$audit" ] && echo "every frame to a SQLite store" || echo off)"
start
before=$(kib VmRSS)
t0=$(date +%s.%N)
bytes=$(PGPASSWORD=agent-secret psql "$url" -qAt -c "copy ($query) to stdout" | wc -c)
t1=$(date +%s.%N)
t2=$(date +%s.%N)
PGPASSWORD=agent-secret psql "$url" -qAt -c "$query" >/dev/null
t3=$(date +%s.%N)
peak=$(kib VmHWM)
after=$(kib VmRSS)
echo "fast client: $ROWS rows ($((bytes / 1000000)) MB as COPY text in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}') s)"
echo "  tollgate RSS before ${before} KiB, peak ${peak} KiB (+$((peak - before)) KiB), after ${after} KiB"
echo "  SELECT in $(awk -v a="$t2" -v b="$t3" 'BEGIN{printf "%.1f", b-a}') s"
if [ -n "$audit" ]; then echo "  store: $(du -cb "$work"/audit.db* | tail -n 1 | cut -f1) bytes"; fi
kill "$pid"
wait "$pid" 2>/dev/null || true

# A client that reads at about 20 MB/s: psql writes COPY rows to a pipe read in small sips.
start
before=$(kib VmRSS)
PGPASSWORD=agent-secret psql "$url" -qAt -c "copy ($query) to stdout" |
  python3 -c '
import sys, time
f = sys.stdin.buffer
while f.read(65536):
    time.sleep(0.003)
'
peak=$(kib VmHWM)
echo "slow client: tollgate RSS before ${before} KiB, peak ${peak} KiB (+$((peak - before)) KiB)"
