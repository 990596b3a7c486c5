#!/usr/bin/env bash
# The test command: prepares the local PostgreSQL (roles for the upstream-login tests), then
# runs every test. Needs PostgreSQL on 127.0.0.1:5432 (trust for postgres on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-postgres.sh
cargo test --locked "$@"
