#!/usr/bin/env bash
# Offline checks of deploy/kubernetes (no cluster): every kustomization (base/, overlays/*/)
# renders with `kubectl kustomize`; the output passes `kubernetes-validate --strict` for a pinned
# Kubernetes version; every document, custom resources included, validates against its schema
# with unknown fields refused (validate.py: CRDs vendored in crds/); every component is used by an
# overlay, so it is rendered and checked too. One line per document; the first failure's
# kustomization, document and reason are printed and the script exits non-zero.
#
# Tools: kubectl (built-in Kustomize) and the deploy venv at $ACUFARM_HOME/deploy
# (scripts/setup.sh deploy-tools; ACUFARM_HOME defaults to ~/.cache/acufarm).
# KUBERNETES_VERSION (default 1.32.0) picks the schemas.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ACUFARM_HOME="${ACUFARM_HOME:-$HOME/.cache/acufarm}"
venv="$ACUFARM_HOME/deploy"
version="${KUBERNETES_VERSION:-1.32.0}"

fail() { echo "check.sh: FAIL: $*" >&2; exit 1; }

[ -x "$venv/bin/python" ] && [ -x "$venv/bin/kubernetes-validate" ] ||
  fail "no deploy venv at $venv (run scripts/setup.sh deploy-tools, or set ACUFARM_HOME)"
command -v kubectl >/dev/null || fail "kubectl is not on PATH (it renders the kustomizations)"
"$venv/bin/python" -c 'import jsonschema, yaml, kubernetes_validate' 2>/dev/null ||
  fail "$venv lacks jsonschema, pyyaml or kubernetes-validate (run scripts/setup.sh deploy-tools)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

targets=(base)
for dir in "$here"/overlays/*/; do
  [ -f "$dir/kustomization.yaml" ] && targets+=("overlays/$(basename "$dir")")
done
[ "${#targets[@]}" -gt 1 ] || fail "no overlay found under $here/overlays"

# A component is only checked through an overlay that includes it.
for dir in "$here"/components/*/; do
  [ -d "$dir" ] || continue
  name="components/$(basename "$dir")"
  grep -qs -- "- ../../$name\$" "$here"/overlays/*/kustomization.yaml ||
    fail "$name is included by no overlay, so nothing renders or checks it"
done

pairs=()
for target in "${targets[@]}"; do
  out="$tmp/${target//\//-}.yaml"
  if ! kubectl kustomize "$here/$target" >"$out" 2>"$tmp/err"; then
    fail "$target: kubectl kustomize failed: $(cat "$tmp/err")"
  fi
  echo "rendered  $target  ($(grep -c '^kind:' "$out") documents)"
  # --quiet prints failures only; custom resources are left to validate.py (--no-warn).
  if ! "$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$version" "$out" >"$tmp/kv" 2>&1; then
    sed "s|$out|$target|g" "$tmp/kv" >&2
    fail "$target: kubernetes-validate --strict (Kubernetes $version) refused the output above"
  fi
  pairs+=("$target=$out")
done

"$venv/bin/python" "$here/validate.py" --crds "$here/crds" --kubernetes-version "$version" "${pairs[@]}" ||
  fail "documents above failed their schema"
echo "check.sh: ${#targets[@]} kustomizations rendered and valid (Kubernetes $version, CRDs in crds/)"
