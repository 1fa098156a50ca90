#!/usr/bin/env bash
# Lints every Dockerfile under deploy/ with hadolint (its venv: scripts/setup.sh deploy-tools),
# failing on warnings. A rule switched off is switched off inside the Dockerfile, with its reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
HOME_DIR=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}
scripts/setup.sh deploy-tools
mapfile -t files < <(find deploy -type f \( -name Dockerfile -o -name 'Dockerfile.*' -o -name '*.Dockerfile' \) | sort)
[ ${#files[@]} -gt 0 ] || { echo "check: no Dockerfile under deploy/" >&2; exit 1; }
"$HOME_DIR/deploy/bin/hadolint" --failure-threshold warning "${files[@]}"
echo "check: hadolint: ${#files[@]} Dockerfiles without warnings (${files[*]})"
