#!/usr/bin/env bash
# The test command: prepares the local PostgreSQL (roles for the upstream-login tests), then
# runs every unit and integration test (doc tests: none; benches: `cargo bench`). Needs
# PostgreSQL on 127.0.0.1:5432 (trust for postgres on loopback). Ends with a total line.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-postgres.sh
# The flood tests hold a few thousand sockets open at once (tests/floods.rs checks the limit).
ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
cargo test --locked --lib --bins --tests "$@" 2>&1 | tee "$out" || status=$?
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tollgate: %d passed, %d failed\n", p, f }' "$out"
exit "$status"
