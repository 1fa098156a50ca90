#!/usr/bin/env bash
# Checks every deployment file without a cluster or a registry: the Compose file against the
# Compose specification (and docker-compose's own parser), every Kustomize overlay rendered and
# validated strictly against the Kubernetes schemas and the vendored CRD schemas, every Dockerfile
# through hadolint, and the references of the manifests (images, variables, secrets; tests/deploy).
# The checkers live in $ACUFARM_HOME/deploy (scripts/setup.sh deploy-tools).
set -euo pipefail
cd "$(dirname "$0")/.."
export ACUFARM_HOME=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}
scripts/setup.sh deploy-tools
deploy/docker/check.sh
deploy/compose/check.sh
deploy/kubernetes/check.sh
"$ACUFARM_HOME/deploy/bin/python" -m pytest -q -p no:cacheprovider tests/deploy
