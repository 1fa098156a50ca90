#!/usr/bin/env bash
# HTTP API latency at scale: one run of 1,000,000 jobs (225 shards, a mix of states) and 1,000
# registered workers, the dashboard's endpoints each asked 200 times over loopback.
# Usage: bench/api.sh [extra api-bench flags]
#   env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), REDIS_URL
#        (redis://127.0.0.1:6379), JOBS (1000000), WORKERS (1000).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p acufarm-bench >&2
exec target/release/api-bench \
  --database-url "${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}" \
  --redis-url "${REDIS_URL:-redis://127.0.0.1:6379}" \
  --jobs "${JOBS:-1000000}" --workers "${WORKERS:-1000}" --json "$@"
