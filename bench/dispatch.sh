#!/usr/bin/env bash
# Coordinator dispatch benchmark: the real coordinator (in-process, PostgreSQL with durable
# commits, loopback gRPC) drained by simulated workers that lease, stage a few bytes per job and
# complete in batches. Runs 10k, 100k and 1M jobs, each in a fresh scratch database, after an
# unreported 5,000-job warm-up drain (--warmup).
# Usage: bench/dispatch.sh [extra dispatch-bench flags]
#   env: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres), WORKERS (8),
#        BATCH (256), JOBS (10000,100000,1000000), STORAGE_DIR (/dev/shm when present, else the
#        temp dir: the run's file:// output root lives there).
# The 1M size takes about 3 minutes on 2 cores (insert ~1 min, drain ~1.5 min, manifest ~20 s)
# and needs ~5 GiB in STORAGE_DIR (a million small files) and ~2.5 GiB of database.
set -euo pipefail
cd "$(dirname "$0")/.."
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
STORAGE_DIR=${STORAGE_DIR:-$( [ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}" )}
cargo build --release -p acufarm-bench >&2
exec target/release/dispatch-bench \
  --database-url "$DATABASE_URL" \
  --jobs "${JOBS:-10000,100000,1000000}" \
  --workers "${WORKERS:-8}" \
  --batch "${BATCH:-256}" \
  --storage-dir "$STORAGE_DIR" \
  --manifest --progress 30 --json "$@"
