#!/usr/bin/env bash
# Installs what acufarm needs on a fresh Debian machine with Rust. Idempotent; safe to re-run.
#
#   scripts/setup.sh runtime   ONNX Runtime 1.31.1 library (from the PyPI wheel) -> $ACUFARM_HOME/onnxruntime
#   scripts/setup.sh dev       runtime + Python venv for the exporter, reference tests and benchmarks,
#                              a MediaPipe venv for the landmark-drift agreement tests,
#                              a transformers 4.x venv (no ftfy) for the tokenizer reference,
#                              rustfmt + clippy, cargo-nextest, cargo-fuzz (with nightly),
#                              curl, Chromium and its WebDriver (HTTP and browser tests),
#                              PostgreSQL and Redis running
#
# ACUFARM_HOME defaults to ~/.cache/acufarm.
set -euo pipefail

ORT_VERSION=1.31.1
HOME_DIR=${ACUFARM_HOME:-${HOME:-/root}/.cache/acufarm}
REPO=$(cd "$(dirname "$0")/.." && pwd)
say() { printf 'setup: %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} with apt-get"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_python() {
  command -v python3 >/dev/null || apt_install python3 python3-venv python3-pip
  python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
}

install_runtime() {
  local dir="$HOME_DIR/onnxruntime"
  if [ -f "$dir/libonnxruntime.so.$ORT_VERSION" ]; then return 0; fi
  ensure_python
  say "fetching onnxruntime==$ORT_VERSION (library only) into $dir"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$ORT_VERSION"
  mkdir -p "$dir"
  python3 - "$tmp"/onnxruntime-*.whl "$dir" <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/capi/libonnxruntime" in name and ".so" in name:
            (out / pathlib.Path(name).name).write_bytes(z.read(name))
PY
  rm -rf "$tmp"
  [ -f "$dir/libonnxruntime.so.$ORT_VERSION" ] || { say "the wheel held no libonnxruntime.so.$ORT_VERSION"; exit 1; }
}

# make_venv DIR WHAT REQS [NODEPS_REQS]: a venv at DIR with REQS installed (and NODEPS_REQS with
# --no-deps), rebuilt only when the requirement files change (a stamp file holds their hash).
make_venv() {
  local venv=$1 what=$2 reqs=$3 nodeps=${4:-} stamp
  stamp=$(cat "$reqs" ${nodeps:+"$nodeps"} | sha256sum | cut -c1-16)
  if [ -f "$venv/.acufarm-$stamp" ]; then return 0; fi
  ensure_python
  say "creating $what in $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r "$reqs"
  if [ -n "$nodeps" ]; then "$venv/bin/pip" install -q --no-deps -r "$nodeps"; fi
  rm -f "$venv"/.acufarm-*
  touch "$venv/.acufarm-$stamp"
}

install_python_env() {
  make_venv "$HOME_DIR/py" "the Python environment (torch and friends: a few GB, several minutes the first time)" \
    "$REPO/scripts/requirements-dev.txt" "$REPO/scripts/requirements-nodeps.txt"
}

install_mediapipe_env() {
  # MediaPipe's own Face Mesh, for the agreement tests of the Rust landmark-drift check.
  make_venv "$HOME_DIR/mediapipe" "the MediaPipe environment (mediapipe 0.10.21 and scikit-image, about 1 GB)" \
    "$REPO/scripts/requirements-mediapipe.txt"
}

install_rust_tools() {
  # rustfmt and clippy for the test command's fmt and lint stages.
  for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
      say "adding the $component component"
      rustup component add "$component" >/dev/null
    fi
  done
}

install_tokenizer_env() {
  # transformers' slow CLIPTokenizer without ftfy: the reference of the tokenizer ids (tests/reference).
  make_venv "$HOME_DIR/clip-tokenizer" "the tokenizer reference environment (transformers 4.57.6, no ftfy; about 300 MB)" \
    "$REPO/scripts/requirements-tokenizer.txt"
}

install_cargo_fuzz() {
  # The fuzz targets (fuzz/, scripts/fuzz.sh) need nightly, which rustup machines here carry, and cargo-fuzz.
  cargo +nightly --version >/dev/null 2>&1 || return 0
  command -v cargo-fuzz >/dev/null && return 0
  say "installing cargo-fuzz"
  cargo install --locked cargo-fuzz >/dev/null
}

install_test_tools() {
  # The HTTP end-to-end tests speak to the coordinator with curl (also over TLS, with client
  # certificates).
  command -v curl >/dev/null || apt_install curl
  # The dashboard's browser tests drive Debian's headless Chromium through its WebDriver.
  { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } || apt_install chromium chromium-driver
}

install_nextest() {
  command -v cargo-nextest >/dev/null && return 0
  say "installing cargo-nextest"
  cargo install --locked cargo-nextest >/dev/null
}

start_services() {
  # PostgreSQL (trust auth, database `test`) and Redis on their standard ports.
  if ! command -v pg_ctlcluster >/dev/null || ! command -v redis-server >/dev/null; then
    apt_install postgresql redis-server
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    local version; version=$(ls /etc/postgresql | sort -V | tail -n1)
    say "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main start
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    say "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  fi
}

case "${1:-runtime}" in
  runtime) install_runtime ;;
  dev) install_runtime; install_python_env; install_mediapipe_env; install_tokenizer_env; install_rust_tools; install_nextest; install_cargo_fuzz; install_test_tools; start_services ;;
  *) say "usage: scripts/setup.sh [runtime|dev]"; exit 2 ;;
esac
