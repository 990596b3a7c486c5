#!/usr/bin/env bash
# pgbench -S (select-only), simple and prepared protocol, 8 clients: directly against
# PostgreSQL and through tollgate (and through pgbouncer in session mode when it is installed),
# interleaved round by round so that all paths see the same machine. Prints median TPS, the
# ratio to direct, and each proxy's CPU time per transaction (utime+stime of the proxy process
# over the run divided by transactions), which is steadier than TPS on a shared machine.
#
# Usage: scripts/bench-pg.sh [seconds-per-run] [rounds]
#        TOLLGATE_WORKERS=N scripts/bench-pg.sh ...   (tollgate's worker threads; default: CPUs)
#        BENCH_AUDIT=1 scripts/bench-pg.sh ...        (adds tollgate recording every frame to a
#                                                      SQLite store and to a PostgreSQL store, and
#                                                      prints each store's bytes per transaction)
#        TOLLGATE_BASELINE=BIN scripts/bench-pg.sh ... (adds a path "baseline": another tollgate
#                                                      binary, e.g. a release build of an earlier
#                                                      commit, configured the same way)
# Needs: PostgreSQL on 127.0.0.1:5432 trusting postgres, pgbench, a release build (made here).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${1:-10}
ROUNDS=${2:-3}
CLIENTS=8
THREADS=2
DB=tollgate_bench
PROXY_PORT=25432
BOUNCER_PORT=26432
export PGSSLMODE=disable # libpq prefers TLS and the local server has it: keep every path plain

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet
tollgate=${CARGO_TARGET_DIR:-target}/release/tollgate
psql -h 127.0.0.1 -U postgres -d postgres -qAt -c "select 1 from pg_database where datname = '$DB'" | grep -q 1 ||
  psql -h 127.0.0.1 -U postgres -d postgres -qc "create database $DB"
if ! psql -h 127.0.0.1 -U postgres -d "$DB" -qAt -c "select count(*) from pgbench_branches" >/dev/null 2>&1; then
  pgbench -h 127.0.0.1 -U postgres -i -s 10 -q "$DB"
fi

echo "agent-secret" >"$work/agent-pw"
declare -A port_of pid_of user_of
port_of[direct]=5432
user_of[direct]=postgres

# start_tollgate NAME PORT [AUDIT_YAML] [BINARY]: a tollgate in front of the bench database.
start_tollgate() {
  local name=$1 port=$2 audit=${3:-} bin=${4:-$tollgate}
  cat >"$work/$name.yaml" <<EOF
listen: { postgres: 127.0.0.1:$port }
${TOLLGATE_WORKERS:+workers: $TOLLGATE_WORKERS}
$audit
targets:
  - name: $DB
    address: 127.0.0.1:5432
    user: postgres
    client_auth: { method: scram-sha-256, user: agent, password: { file: $work/agent-pw } }
EOF
  TOLLGATE_LOG=warn "$bin" serve --config "$work/$name.yaml" 2>"$work/$name.log" &
  pid_of[$name]=$!
  port_of[$name]=$port
  user_of[$name]=agent
  pids+=("$!")
  for _ in $(seq 1 50); do
    PGPASSWORD=agent-secret psql -h 127.0.0.1 -p "$port" -U agent -d $DB -qAtc 'select 1' >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "$name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

paths=(direct tollgate)
start_tollgate tollgate $PROXY_PORT
if [ -n "${TOLLGATE_BASELINE:-}" ]; then
  start_tollgate baseline 25435 "" "$TOLLGATE_BASELINE"
  paths+=(baseline)
fi
if [ "${BENCH_AUDIT:-}" = 1 ]; then
  "$tollgate" audit keygen --out "$work/signing.pem" >/dev/null
  start_tollgate audit-sqlite 25433 "audit: { sqlite: $work/audit.db, signing_key: { file: $work/signing.pem } }"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists tollgate_bench_audit" -c "create database tollgate_bench_audit"
  export TOLLGATE_BENCH_AUDIT_URL=postgres://postgres@127.0.0.1:5432/tollgate_bench_audit
  start_tollgate audit-pg 25434 "audit: { postgres: { env: TOLLGATE_BENCH_AUDIT_URL }, signing_key: { file: $work/signing.pem } }"
  paths+=(audit-sqlite audit-pg)
fi

bouncer_pid=
if command -v pgbouncer >/dev/null 2>&1; then
  cat >"$work/pgbouncer.ini" <<EOF
[databases]
$DB = host=127.0.0.1 port=5432 dbname=$DB user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
unix_socket_dir =
EOF
  echo '"postgres" ""' >"$work/userlist.txt"
  chown -R postgres "$work" 2>/dev/null || true
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- pgbouncer "$work/pgbouncer.ini" >/dev/null 2>&1 &
  else
    pgbouncer "$work/pgbouncer.ini" >/dev/null 2>&1 &
  fi
  sleep 1
  bouncer_pid=$(cat "$work/pgbouncer.pid" 2>/dev/null || true)
  if [ -n "$bouncer_pid" ]; then
    pids+=("$bouncer_pid")
    paths+=(pgbouncer)
    port_of[pgbouncer]=$BOUNCER_PORT
    pid_of[pgbouncer]=$bouncer_pid
    user_of[pgbouncer]=postgres
  fi
fi

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run PATH MODE: prints "tps transactions cpu_seconds"
run() {
  local path=$1 mode=$2 before=0 after=0 out
  local port=${port_of[$path]} user=${user_of[$path]} pid=${pid_of[$path]:-}
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  out=$(PGPASSWORD=agent-secret pgbench -h 127.0.0.1 -p "$port" -U "$user" -S -M "$mode" \
    -c $CLIENTS -j $THREADS -T "$SECONDS_PER_RUN" -n "$DB" 2>&1)
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  local tps txns
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | tail -n 1)
  txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  echo "$tps $txns $(awk -v a="$after" -v b="$before" -v hz="$hz" 'BEGIN{print (a-b)/hz}')"
}

declare -A results
for round in $(seq 1 "$ROUNDS"); do
  for mode in simple prepared; do
    for path in "${paths[@]}"; do
      r=$(run "$path" "$mode")
      results[$path.$mode]+="$r"$'\n'
      echo "round $round $mode $path: $r" >&2
    done
  done
done

median() { sort -n | awk '{v[NR]=$1} END{print (NR%2)? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "pgbench -S, $CLIENTS clients, ${SECONDS_PER_RUN}s x $ROUNDS rounds, $(nproc) cores, tollgate workers: ${TOLLGATE_WORKERS:-$(nproc)}, $(date -u +%F)"
printf '%-10s %-12s %10s %8s %14s\n' mode path tps ratio "cpu_us/txn"
for mode in simple prepared; do
  direct=$(awk '{print $1}' <<<"${results[direct.$mode]}" | grep . | median)
  for path in "${paths[@]}"; do
    tps=$(awk '{print $1}' <<<"${results[$path.$mode]}" | grep . | median)
    cpu=$(awk '$2 > 0 {s += $3; t += $2} END{ if (t) printf "%.1f", s / t * 1e6; else print "-" }' <<<"${results[$path.$mode]}")
    [ "$path" = direct ] && cpu=-
    printf '%-10s %-12s %10.0f %8.2f %14s\n' "$mode" "$path" "$tps" "$(awk -v a="$tps" -v b="$direct" 'BEGIN{print a/b}')" "$cpu"
  done
done

# Every path's transactions, both modes, all rounds.
txns_of() { awk '{t += $2} END{print t}' <<<"${results[$1.simple]}${results[$1.prepared]}"; }
echo
printf '%-12s %14s\n' path "peak RSS KiB"
for path in "${paths[@]}"; do
  pid=${pid_of[$path]:-}
  [ -n "$pid" ] && [ -r "/proc/$pid/status" ] && printf '%-12s %14s\n' "$path" "$(awk '$1 == "VmHWM:" {print $2}' "/proc/$pid/status")"
done
if [ "${BENCH_AUDIT:-}" = 1 ]; then
  # The stores' size (records, indexes; SQLite's WAL checkpointed into the file) per transaction.
  # The writers stop first, so that everything queued is written.
  kill "${pid_of[audit-sqlite]}" "${pid_of[audit-pg]}"
  wait "${pid_of[audit-sqlite]}" "${pid_of[audit-pg]}" 2>/dev/null || true
  sqlite3 "$work/audit.db" 'pragma wal_checkpoint(truncate)' >/dev/null
  sqlite_bytes=$(stat -c %s "$work/audit.db")
  pg_bytes=$(psql -h 127.0.0.1 -U postgres -d tollgate_bench_audit -qAtc "select pg_total_relation_size('audit_records') + pg_total_relation_size('audit_checkpoints')")
  echo
  printf '%-12s %14s %10s %12s\n' store bytes records "bytes/txn"
  records=$(sqlite3 "$work/audit.db" 'select count(*) from audit_records')
  printf '%-12s %14s %10s %12.0f\n' audit-sqlite "$sqlite_bytes" "$records" "$(awk -v b="$sqlite_bytes" -v t="$(txns_of audit-sqlite)" 'BEGIN{print b/t}')"
  records=$(psql -h 127.0.0.1 -U postgres -d tollgate_bench_audit -qAtc 'select count(*) from audit_records')
  printf '%-12s %14s %10s %12.0f\n' audit-pg "$pg_bytes" "$records" "$(awk -v b="$pg_bytes" -v t="$(txns_of audit-pg)" 'BEGIN{print b/t}')"
fi
