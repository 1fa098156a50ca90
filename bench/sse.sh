#!/usr/bin/env bash
# Dispatch throughput with 100 dashboard clients (server-sent events) connected during each drain,
# against none: ROUNDS (5) interleaved pairs of 100,000-job drains, each size in a fresh database,
# in one process after the usual warm-up. Prints one JSON line per drain.
# Usage: bench/sse.sh   env: DATABASE_URL, JOBS (100000), CLIENTS (100), ROUNDS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
STORAGE_DIR=${STORAGE_DIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}" )}
cargo build --release -p acufarm-bench >&2
for round in $(seq "${ROUNDS:-5}"); do
  for clients in 0 "${CLIENTS:-100}"; do
    target/release/dispatch-bench --database-url "$DATABASE_URL" --jobs "${JOBS:-100000}" --workers 8 --batch 256 \
      --storage-dir "$STORAGE_DIR" --sse-clients "$clients" --warmup 5000 --json | grep '^{' | sed "s/^{/{\"round\":$round,/"
  done
done
