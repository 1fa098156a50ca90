#!/usr/bin/env bash
# The Compose stack end to end, as CI runs it (no image registry): builds the coordinator and
# worker-cpu images from the host's binary (deploy/docker/build.sh --context; ACUFARM_BIN, default
# target/debug/acufarm) and CI's stand-ins for PostgreSQL, Redis and S3 (deploy/compose/ci/; moto
# in place of MinIO), brings up compose.yaml with COMPOSE_PROFILES=cpu and two CPU workers under a
# unique project name on free ports, uploads examples/acusim-mini to the S3 stand-in, submits
# examples/acusim.toml (inputs and outputs on S3) from the host, waits for it, verifies the
# outputs, checks /readyz and /metrics on both coordinators, and takes it all down again, checking
# that nothing of the project is left. Each step prints its time; on failure every service's last
# 100 log lines are printed. The GPU image is not built here (only linted: deploy/docker/check.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
export ACUFARM_HOME=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$REPO/deploy/compose/ci/containers.conf}
ACUFARM_BIN=${ACUFARM_BIN:-target/debug/acufarm}
PY=$ACUFARM_HOME/py/bin/python
PROJECT=acufarm-e2e-$$
BUCKET=acufarm
WORK=$(mktemp -d /tmp/acufarm-e2e.XXXXXX)
export ACUFARM_SECRETS_DIR=$WORK/secrets
# podman refuses a bind mount whose source is missing (Docker would make it): the workers mount
# the worker/ folder that `secrets init` fills.
mkdir -p "$ACUFARM_SECRETS_DIR/worker"
LABEL=com.docker.compose.project=$PROJECT
STARTED=$SECONDS
TIMES=()
SERVICE_PID= HEALTH_PID= UP=0

say() { printf 'e2e: %s\n' "$*" >&2; }
loud() { printf '%s\n' "################################################################################" "e2e: $*" \
  "################################################################################" >&2; }
step() {
  local name=$1 started=$SECONDS
  shift
  say "==> $name"
  "$@"
  TIMES+=("$(printf '%-24s %5d s' "$name" $((SECONDS - started)))")
  say "==> $name: $((SECONDS - started)) s"
}
compose() { docker-compose -p "$PROJECT" -f deploy/compose/compose.yaml --env-file deploy/compose/.env.example "$@"; }

cleanup() {
  local rc=$?
  set +e
  if [ $rc -ne 0 ] && [ $UP = 1 ]; then
    say "FAILED (exit $rc); the last 100 log lines of each service:"
    for service in $(compose config --services 2>/dev/null); do
      compose logs --no-color --tail 100 "$service" 2>/dev/null
    done
  fi
  if [ $UP = 1 ]; then compose down -v --remove-orphans -t 30 >/dev/null 2>&1; fi
  [ -z "$HEALTH_PID" ] || kill "$HEALTH_PID" 2>/dev/null
  [ -z "$SERVICE_PID" ] || { kill "$SERVICE_PID" 2>/dev/null; wait "$SERVICE_PID" 2>/dev/null; }
  rm -rf "$WORK"
  if [ ${#TIMES[@]} -gt 0 ]; then say "step times:"; printf '  %s\n' "${TIMES[@]}" >&2; fi
  say "$([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $((SECONDS - STARTED)) s"
  exit $rc
}
trap cleanup EXIT

preflight() {
  [ -x "$ACUFARM_BIN" ] || { say "no acufarm binary at $ACUFARM_BIN (cargo build -p acufarm-cli, or set ACUFARM_BIN)"; exit 1; }
  [ -x "$PY" ] || { say "no Python environment at $PY (scripts/setup.sh dev)"; exit 1; }
  scripts/setup.sh containers
  command -v curl >/dev/null || { say "curl is missing (scripts/setup.sh dev)"; exit 1; }
}

start_podman_service() {
  # docker-compose speaks the Docker API: podman serves it on a socket of this run.
  local sock=$WORK/podman.sock
  podman system service --time=0 "unix://$sock" >"$WORK/podman-service.log" 2>&1 &
  SERVICE_PID=$!
  export DOCKER_HOST=unix://$sock
  for _ in $(seq 100); do [ -S "$sock" ] && docker-compose version >/dev/null 2>&1 && return 0; sleep 0.1; done
  say "podman system service did not start: $(cat "$WORK/podman-service.log")"; exit 1
}

build_acufarm_images() {
  ACUFARM_BIN=$ACUFARM_BIN deploy/docker/build.sh --context coordinator worker-cpu
  # Each new binary leaves the previous images untagged (about 1.9 GB a build): drop the untagged
  # ones, so repeated runs do not fill the disk.
  podman image prune -f >/dev/null
}

build_stand_ins() {
  # moto's wheels are fetched on the host (a container here may not trust the host's certificates).
  local wheels=deploy/compose/ci/wheels stamp=deploy/compose/ci/wheels/.moto-5.2.1
  if [ ! -f "$stamp" ]; then
    rm -rf "$wheels"
    python3 -m pip download -q --only-binary=:all: -d "$wheels" 'moto[server]==5.2.1'
    touch "$stamp"
  fi
  local target started
  for target in postgres redis s3; do
    started=$SECONDS
    podman build -q --target "$target" -t "acufarm-ci-$target:latest" deploy/compose/ci >/dev/null
    say "stand-in acufarm-ci-$target in $((SECONDS - started)) s"
  done
}

free_ports() {
  "$PY" - <<'PY'
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

drive_healthchecks() {
  # podman runs healthchecks from systemd timers; without systemd nothing would ever turn a
  # container healthy, so this loop runs them (for `depends_on: condition: service_healthy`).
  while sleep 2; do
    for id in $(podman ps -q --filter "label=$LABEL" --filter health=starting) \
              $(podman ps -q --filter "label=$LABEL" --filter health=unhealthy); do
      podman healthcheck run "$id" >/dev/null 2>&1 || true
    done
  done
}

bring_up() {
  read -r A_GRPC A_HTTP B_GRPC B_HTTP S3_PORT S3_CONSOLE <<<"$(free_ports)"
  export COORDINATOR_A_GRPC_PORT=$A_GRPC COORDINATOR_A_HTTP_PORT=$A_HTTP \
    COORDINATOR_B_GRPC_PORT=$B_GRPC COORDINATOR_B_HTTP_PORT=$B_HTTP S3_PORT S3_CONSOLE_PORT=$S3_CONSOLE
  # The shell's values win over --env-file's (.env.example says COMPOSE_PROFILES=gpu).
  export COMPOSE_PROFILES=cpu ACUFARM_HOST_UID=$(id -u) S3_BUCKET=$BUCKET
  export ACUFARM_COORDINATOR_IMAGE=localhost/acufarm-coordinator:0.1.0
  export ACUFARM_WORKER_CPU_IMAGE=localhost/acufarm-worker-cpu:0.1.0
  export POSTGRES_IMAGE=localhost/acufarm-ci-postgres:latest REDIS_IMAGE=localhost/acufarm-ci-redis:latest
  export S3_IMAGE=localhost/acufarm-ci-s3:latest
  loud "not started: otel-collector, prometheus, grafana (their images cannot be had without a registry); the coordinators' OTLP export goes nowhere"
  if [ ! -S /run/systemd/private ]; then
    say "no systemd: this run drives the containers' healthchecks itself (podman healthcheck run)"
    drive_healthchecks &
    HEALTH_PID=$!
  fi
  UP=1
  compose up -d --scale worker-cpu=2 postgres redis s3 s3-bucket certs migrate coordinator-a coordinator-b worker-cpu
  local services; services=$(podman ps --filter "label=$LABEL" --format '{{index .Labels "com.docker.compose.service"}}' | sort | tr '\n' ' ')
  say "running: $services"
  case " $services " in *" worker "*) say "the gpu profile's worker started although COMPOSE_PROFILES=cpu"; exit 1 ;; esac
  [ "$(grep -o 'worker-cpu' <<<"$services" | wc -l)" = 2 ] || { say "expected two worker-cpu containers"; exit 1; }
}

wait_ready() {
  local port
  for port in "$A_HTTP" "$B_HTTP"; do
    for _ in $(seq 120); do
      curl -sf --cacert "$ACUFARM_SECRETS_DIR/ca.pem" "https://127.0.0.1:$port/readyz" >/dev/null && continue 2
      sleep 1
    done
    say "the coordinator on port $port did not become ready"; exit 1
  done
}

export_host_s3() {
  export AWS_ACCESS_KEY_ID=acufarm AWS_SECRET_ACCESS_KEY=acufarm-dev-secret AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL=http://127.0.0.1:$S3_PORT AWS_ALLOW_HTTP=true
}

upload_dataset() {
  export_host_s3
  "$PY" - "$BUCKET" examples/acusim-mini <<'PY'
import os, pathlib, sys
import boto3
bucket, root = sys.argv[1], pathlib.Path(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
files = [p for p in sorted(root.rglob("*")) if p.is_file()]
for path in files:
    s3.upload_file(str(path), bucket, f"e2e/acusim-mini/{path.relative_to(root)}")
print(f"e2e: uploaded {len(files)} files to s3://{bucket}/e2e/acusim-mini/", file=sys.stderr)
PY
}

write_spec() {
  # examples/acusim.toml with S3 roots and its own run name, beside a copy of its scenes/ (scene
  # paths are relative to the spec).
  RUN=e2e-$$
  SPEC=$WORK/acusim-e2e.toml
  cp -r examples/scenes "$WORK/scenes"
  "$PY" - examples/acusim.toml "$SPEC" "$RUN" "$BUCKET" <<'PY'
import re, sys
source, target, run, bucket = sys.argv[1:]
text = open(source).read()
subs = [
    (r'(?m)^name = ".*"$', f'name = "{run}"'),
    (r'(?m)^input = ".*"$', f'input = "s3://{bucket}/e2e/acusim-mini"'),
    (r'(?m)^output = ".*"$', f'output = "s3://{bucket}/e2e/out"'),
]
for pattern, value in subs:
    text, n = re.subn(pattern, value, text)
    assert n == 1, f"{pattern} matched {n} times in {source}"
open(target, "w").write(text)
PY
}

client() {
  "$ACUFARM_BIN" "$@" --coordinator "https://127.0.0.1:$A_GRPC" \
    --ca-cert "$ACUFARM_SECRETS_DIR/ca.pem" --token-file "$ACUFARM_SECRETS_DIR/operator-token"
}

submit_and_wait() {
  client submit "$SPEC" --bundle models/tiny/fc
  client status "$RUN" --wait --wait-timeout 600 --json >"$WORK/status.json"
  JOBS=$("$PY" - "$WORK/status.json" "$RUN" <<'PY'
import json, sys
status, run = json.load(open(sys.argv[1])), sys.argv[2]
[entry] = [r for r in status["runs"] if r["name"] == run]
counts = entry["counts"]
total = sum(counts.values())
print(f"e2e: run {run}: {counts}", file=sys.stderr)
if total == 0 or counts["succeeded"] != total:
    sys.exit(f"e2e: not every job of {run} succeeded: {counts}; failures: {entry['failures']}")
print(total)
PY
)
}

verify_outputs() {
  # Every output and label re-hashed against the manifest, read from S3 from the host.
  export_host_s3
  "$ACUFARM_BIN" verify "s3://$BUCKET/e2e/out"
}

# The body of a 200 answer from URL; another answer is asked again for up to a minute (as a
# scraper would on its next interval: a loaded machine can time one out), then printed.
fetch_ok() {
  local url=$1 deadline=$((SECONDS + 60)) out code body
  while :; do
    out=$(curl -sS -w '\n%{http_code}' --max-time 20 --cacert "$ACUFARM_SECRETS_DIR/ca.pem" "$url" 2>&1) || true
    code=${out##*$'\n'}
    body=${out%$'\n'*}
    if [ "$code" = 200 ]; then
      printf '%s' "$body"
      return 0
    fi
    if [ $SECONDS -ge $deadline ]; then
      say "$url answered $code: $body"
      return 1
    fi
    say "$url answered $code (${body:0:300}); asking again"
    sleep 2
  done
}

check_http() {
  local port body metrics
  for port in "$A_HTTP" "$B_HTTP"; do
    body=$(fetch_ok "https://127.0.0.1:$port/readyz")
    say "readyz on $port: $body"
    grep -q '"database": *"ok"' <<<"$body" || { say "the database is not ok on $port"; exit 1; }
    metrics=$(fetch_ok "https://127.0.0.1:$port/metrics")
    grep -q '^acufarm_jobs_completed_total' <<<"$metrics" || { say "no acufarm_jobs_completed_total on $port"; exit 1; }
    local line; line=$(grep "^acufarm_jobs{" <<<"$metrics" | grep "run=\"$RUN\"" | grep 'state="succeeded"' || true)
    say "metrics on $port: $line"
    [ "${line##* }" = "$JOBS" ] || { say "acufarm_jobs{run=\"$RUN\",state=\"succeeded\"} is not $JOBS on $port"; exit 1; }
  done
}

take_down() {
  # What the services logged at WARN or ERROR, for the record (the run passed regardless).
  compose logs --no-color >"$WORK/services.log" 2>&1 || true
  say "services logged $(wc -l <"$WORK/services.log") lines, $(grep -cE ' (WARN|ERROR) ' "$WORK/services.log" || true) at WARN/ERROR; the first 20:"
  grep -E ' (WARN|ERROR) ' "$WORK/services.log" | head -20 >&2 || true
  # Workers first, while the coordinators still answer (the order an operator drains a farm in).
  local started=$SECONDS
  compose stop worker-cpu
  say "the workers drained and stopped in $((SECONDS - started)) s"
  compose down -v --remove-orphans
  UP=0
  local left
  left=$(podman ps -a -q --filter "label=$LABEL"; podman pod ps -q --filter "label=$LABEL"
    podman volume ls -q --filter "label=$LABEL"; podman network ls -q --filter "label=$LABEL")
  [ -z "$left" ] || { say "left behind by down -v: $left"; exit 1; }
  say "nothing of $PROJECT is left (containers, pods, volumes, networks)"
}

step preflight preflight
step podman-service start_podman_service
step acufarm-images build_acufarm_images
step stand-in-images build_stand_ins
step up bring_up
step ready wait_ready
step upload upload_dataset
step spec write_spec
step submit-and-wait submit_and_wait
step verify verify_outputs
step readyz-and-metrics check_http
step down take_down
