#!/usr/bin/env bash
# Streams a 1-million-row result with a PAN column directly from PostgreSQL and through tollgate
# (which masks every PAN), interleaved; prints rows/s of each, the ratio, and tollgate's peak
# RSS.
#
# Usage: scripts/bench-mask.sh [rows] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${1:-1000000}
ROUNDS=${2:-3}
PORT=25434
export PGSSLMODE=disable
work=$(mktemp -d)
pid=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
echo "agent-secret" >"$work/agent-pw"
cat >"$work/tollgate.yaml" <<EOF2
listen: { postgres: 127.0.0.1:$PORT }
targets:
  - name: test
    address: 127.0.0.1:5432
    user: postgres
    client_auth: { method: scram-sha-256, user: agent, password: { file: $work/agent-pw } }
EOF2
TOLLGATE_LOG=warn target/release/tollgate serve --config "$work/tollgate.yaml" 2>"$work/log" &
pid=$!
for _ in $(seq 1 50); do
  PGPASSWORD=agent-secret psql "host=127.0.0.1 port=$PORT user=agent dbname=test" -qAtc 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done
before=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status")

# One row in four carries a PAN (formatted like stored card data), the rest order data.
query="copy (select g, 'customer ' || g, case when g % 4 = 0 then '4111111111111111' else 'n/a' end, \
 now() from generate_series(1, $ROWS) g) to stdout"

run() { # url -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  PGPASSWORD=agent-secret psql "$1" -qAt -c "$query" | wc -c >/dev/null
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}'
}
direct_url="host=127.0.0.1 port=5432 user=postgres dbname=test"
proxy_url="host=127.0.0.1 port=$PORT user=agent dbname=test"
# Masking really happens on the proxy path.
PGPASSWORD=agent-secret psql "$proxy_url" -qAt -c "copy (select '4111111111111111') to stdout" | grep -q '411111\*\*\*\*\*\*1111'

d=() p=()
for _ in $(seq 1 "$ROUNDS"); do
  d+=("$(run "$direct_url")")
  p+=("$(run "$proxy_url")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END{print (NR%2)? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
dm=$(median "${d[@]}")
pm=$(median "${p[@]}")
peak=$(awk '$1 == "VmHWM:" {print $2}' "/proc/$pid/status")
echo "$ROWS rows (one in four with a PAN), COPY TO STDOUT, $ROUNDS rounds, $(date -u +%F)"
awk -v r="$ROWS" -v d="$dm" -v p="$pm" 'BEGIN{printf "direct   %9.0f rows/s\ntollgate %9.0f rows/s (masked), ratio %.2f\n", r/d, r/p, d/p}'
echo "tollgate RSS before ${before} KiB, peak ${peak} KiB"
