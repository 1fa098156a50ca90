#!/usr/bin/env bash
# Validates deploy/compose/compose.yaml: against the Compose specification's JSON Schema
# (check-jsonschema's built-in copy; scripts/setup.sh deploy-tools), and with Debian's
# docker-compose 1.29 (`config -q`, which also resolves every variable), with .env.example and with
# no variables set (the defaults), for both profiles.
set -euo pipefail
cd "$(dirname "$0")/../.."
HOME_DIR=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}
FILE=deploy/compose/compose.yaml
scripts/setup.sh deploy-tools
"$HOME_DIR/deploy/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$FILE"
command -v docker-compose >/dev/null || { echo "check: docker-compose is missing (scripts/setup.sh containers)" >&2; exit 1; }
empty=$(mktemp)
trap 'rm -f "$empty"' EXIT
for env_file in deploy/compose/.env.example "$empty"; do
  for profile in gpu cpu; do
    COMPOSE_PROFILES=$profile docker-compose -f "$FILE" --env-file "$env_file" config -q
    echo "check: docker-compose config: $FILE with $env_file, profile $profile"
  done
done
