#!/usr/bin/env bash
# MySQL path benchmarks against the local MariaDB:
#  1. sysbench oltp_read_only, 8 threads: directly and through tollgate, interleaved round by
#     round; prints median TPS, the ratio to direct, and tollgate's CPU time per transaction.
#  2. A masked 1-million-row stream (every row holds a card number) read with the mariadb CLI,
#     directly and through tollgate: wall time, tollgate's peak RSS before and after (bounded
#     memory), and a check that no clear PAN reached the client.
#
# Usage: scripts/bench-mysql.sh [seconds-per-run] [rounds]
#        TOLLGATE_WORKERS=N scripts/bench-mysql.sh ...   (tollgate's worker threads)
# Needs: MariaDB on 127.0.0.1:3306 (root, empty password), sysbench (apt-get install sysbench),
#        the mariadb CLI, a release build (made here).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
THREADS=8
DB=tollgate_bench
PORT=23306

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
my() { mariadb -h 127.0.0.1 -P 3306 -u root "$@"; }
my -e "create database if not exists $DB"
common=(--db-driver=mysql --mysql-db=$DB --tables=4 --table-size=100000)
if ! my -N -e "select count(*) from $DB.sbtest4" >/dev/null 2>&1; then
  sysbench oltp_read_only "${common[@]}" --mysql-host=127.0.0.1 --mysql-port=3306 \
    --mysql-user=root prepare >/dev/null
fi

echo -n "agent-secret" >"$work/agent-pw"
cat >"$work/tollgate.yaml" <<EOF
listen: { postgres: 127.0.0.1:25439, mysql: 127.0.0.1:$PORT }
${TOLLGATE_WORKERS:+workers: $TOLLGATE_WORKERS}
targets:
  - name: $DB
    protocol: mysql
    address: 127.0.0.1:3306
    user: root
    client_auth: { method: password, user: agent, password: { file: $work/agent-pw } }
EOF
TOLLGATE_LOG=warn target/release/tollgate serve --config "$work/tollgate.yaml" 2>"$work/tollgate.log" &
tollgate_pid=$!
pids+=("$tollgate_pid")
for _ in $(seq 1 50); do
  mariadb -h 127.0.0.1 -P $PORT -u agent -pagent-secret $DB -e 'select 1' >/dev/null 2>&1 && break
  sleep 0.1
done

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run PATH: prints "tps transactions cpu_seconds"
run() {
  local path=$1 before=0 after=0 out port=3306 user=root pass=
  if [ "$path" = tollgate ]; then
    port=$PORT user=agent pass=agent-secret
    before=$(cpu_ticks "$tollgate_pid")
  fi
  # libmariadb loads the cleartext plugin lazily and, when several threads log in at once,
  # one may fail with "Plugin mysql_clear_password could not be loaded: it is already loaded"
  # (a client-library race, not tollgate's): such a run is retried.
  for _ in 1 2 3; do
    out=$(sysbench oltp_read_only "${common[@]}" --mysql-host=127.0.0.1 --mysql-port=$port \
      --mysql-user=$user --mysql-password=$pass --threads=$THREADS --time="$SECONDS_PER_RUN" \
      --report-interval=0 run 2>&1) && break
    grep -q 'already loaded' <<<"$out" || break
    echo "retrying $path: client plugin race" >&2
  done
  [ "$path" = tollgate ] && after=$(cpu_ticks "$tollgate_pid")
  local tps txns
  tps=$(sed -n 's/.*transactions: *\([0-9]*\) *(\([0-9.]*\) per sec.*/\2/p' <<<"$out")
  txns=$(sed -n 's/.*transactions: *\([0-9]*\) *(.*/\1/p' <<<"$out")
  if [ -z "$tps" ]; then
    echo "sysbench failed on $path:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "$tps $txns $(awk -v a="$after" -v b="$before" -v hz="$hz" 'BEGIN{print (a-b)/hz}')"
}

declare -A results
for round in $(seq 1 "$ROUNDS"); do
  for path in direct tollgate; do
    r=$(run "$path")
    results[$path]+="$r"$'\n'
    echo "round $round $path: $r" >&2
  done
done

median() { sort -n | awk '{v[NR]=$1} END{print (NR%2)? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "sysbench oltp_read_only, $THREADS threads, 4 x 100k rows, ${SECONDS_PER_RUN}s x $ROUNDS rounds, $(nproc) cores, tollgate workers: ${TOLLGATE_WORKERS:-$(nproc)}, $(date -u +%F)"
printf '%-10s %10s %8s %14s\n' path tps ratio "cpu_us/txn"
direct=$(awk '{print $1}' <<<"${results[direct]}" | grep . | median)
for path in direct tollgate; do
  tps=$(awk '{print $1}' <<<"${results[$path]}" | grep . | median)
  cpu=$(awk '$2 > 0 {s += $3; t += $2} END{ if (t) printf "%.1f", s / t * 1e6; else print "-" }' <<<"${results[$path]}")
  [ "$path" = direct ] && cpu=-
  printf '%-10s %10.0f %8.2f %14s\n' "$path" "$tps" "$(awk -v a="$tps" -v b="$direct" 'BEGIN{print a/b}')" "$cpu"
done

# The masked stream: one million rows, each with a card number in a string and in a BIGINT.
query="select seq, '4111111111111111' as pan, 4111111111111111 + 0 as num, concat('row ', seq, ' card 5555555555554444') as note from seq_1_to_1000000"
hwm() { awk '/VmHWM/ {print $2}' "/proc/$tollgate_pid/status"; }
echo
echo "1,000,000 rows with PANs, read with the mariadb CLI (--quick: rows are not buffered by the client)"
printf '%-10s %8s %12s %14s\n' path seconds bytes "clear PANs"
for path in direct tollgate; do
  port=3306 user=root pass=
  [ "$path" = tollgate ] && port=$PORT user=agent pass=-pagent-secret
  [ "$path" = tollgate ] && before_kb=$(hwm)
  start=$(date +%s.%N)
  mariadb --quick -N -h 127.0.0.1 -P $port -u $user $pass $DB -e "$query" >"$work/rows.$path"
  end=$(date +%s.%N)
  clear=$(grep -c -E '4111111111111111|5555555555554444' "$work/rows.$path" || true)
  printf '%-10s %8.2f %12s %14s\n' "$path" "$(awk -v a="$start" -v b="$end" 'BEGIN{print b-a}')" "$(wc -c <"$work/rows.$path")" "$clear"
  rm -f "$work/rows.$path"
done
echo "tollgate peak RSS: ${before_kb} kB before the stream, $(hwm) kB after"
