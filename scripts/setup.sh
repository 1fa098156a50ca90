#!/usr/bin/env bash
# Installs what acufarm needs on a fresh Debian machine with Rust. Idempotent; safe to re-run.
#
#   scripts/setup.sh runtime   ONNX Runtime 1.31.1 library (from the PyPI wheel) -> $ACUFARM_HOME/onnxruntime
#   scripts/setup.sh dev       runtime + Python venv for the exporter, reference tests and benchmarks,
#                              a MediaPipe venv for the landmark-drift agreement tests,
#                              a transformers 4.x venv (no ftfy) for the tokenizer reference,
#                              rustfmt + clippy, cargo-nextest, cargo-fuzz (with nightly),
#                              curl, Chromium and its WebDriver (HTTP and browser tests),
#                              PostgreSQL and Redis running, the deployment checkers, podman and
#                              docker-compose with the local base image (what `containers` installs)
#   scripts/setup.sh deploy-tools  only the deployment checkers -> $ACUFARM_HOME/deploy
#   scripts/setup.sh containers    rootful podman 4.3, Debian's docker-compose, the local base image
#                                  localhost/local/debian:bookworm (debootstrap; built when missing)
#   scripts/setup.sh image-context [DIR]  ${ACUFARM_BIN:-target/release/acufarm} + the ONNX Runtime
#                                  library laid out for the images (default deploy/docker/prebuilt)
#   scripts/setup.sh gpu-runtime PREFIX [--no-tensorrt]  onnxruntime-gpu + CUDA 13 + cuDNN 9 (+ TensorRT)
#                                  wheels in a venv at PREFIX, PREFIX/lib.conf, a check of their libraries
#   scripts/setup.sh image-coordinator | image-worker-cpu | image-worker-gpu
#                                  the install steps of deploy/docker/Dockerfile's stages (as root, in a build)
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
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
}

ensure_venv() {
  command -v python3 >/dev/null || apt_install python3 python3-venv
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

install_deploy_tools() {
  # deploy/check.sh: Compose schema, Kubernetes schemas, CRD schemas, hadolint.
  make_venv "$HOME_DIR/deploy" "the deployment checkers (check-jsonschema, kubernetes-validate, hadolint; about 100 MB)" \
    "$REPO/scripts/requirements-deploy.txt"
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

# --- Containers (deploy/) -------------------------------------------------------------------------

# containers.conf for podman where crun cannot set rlimits (runc, cgroupfs); e2e.sh exports it.
CONTAINERS_CONF_FILE=$REPO/deploy/compose/ci/containers.conf
LOCAL_BASE=localhost/local/debian:bookworm

install_containers() {
  # Rootful podman, and Debian's docker-compose 1.29 talking to it (podman system service).
  apt_install podman runc conmon netavark aardvark-dns iptables catatonit debootstrap uidmap docker-compose
  export CONTAINERS_CONF=${CONTAINERS_CONF:-$CONTAINERS_CONF_FILE}
  if as_root env CONTAINERS_CONF="$CONTAINERS_CONF" podman image exists "$LOCAL_BASE"; then return 0; fi
  # The base image CI builds on (no registry is reachable): Debian bookworm minbase by debootstrap.
  local mirror rootfs
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  rootfs=$(mktemp -d)
  say "building $LOCAL_BASE with debootstrap from ${mirror:=http://deb.debian.org/debian} (about 2 min)"
  as_root debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  as_root rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  as_root tar -C "$rootfs" -c . | as_root env CONTAINERS_CONF="$CONTAINERS_CONF" \
    podman import -q --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
  as_root rm -rf "$rootfs"
}

# image-context [DIR]: the files deploy/docker/Dockerfile's `binary` stage holds, laid out in DIR
# (default deploy/docker/prebuilt/, what the `prebuilt` stage copies): DIR/acufarm and
# DIR/onnxruntime/libonnxruntime.so.1.31.1 (+ the .so.1 and .so names, providers_shared). The
# `compile` stage makes the same layout in /out with this target.
image_context() {
  local out=${1:-$REPO/deploy/docker/prebuilt} bin=${ACUFARM_BIN:-$REPO/target/release/acufarm}
  local ort=$HOME_DIR/onnxruntime
  [ -x "$bin" ] || { say "no acufarm binary at $bin: build it (cargo build --release -p acufarm-cli) or set ACUFARM_BIN"; exit 1; }
  install_runtime
  mkdir -p "$out/onnxruntime"
  # Without its debug sections (a debug build's are ~90 % of it; strip is deterministic), then cmp
  # first: an unchanged file keeps its timestamp, and the image layers stay cached.
  local stripped; stripped=$(mktemp)
  if command -v strip >/dev/null; then strip --strip-debug -o "$stripped" "$bin"; else cp -f "$bin" "$stripped"; fi
  chmod 0755 "$stripped"
  copy_if_changed "$stripped" "$out/acufarm"
  rm -f "$stripped"
  copy_if_changed "$ort/libonnxruntime.so.$ORT_VERSION" "$out/onnxruntime/libonnxruntime.so.$ORT_VERSION"
  copy_if_changed "$ort/libonnxruntime_providers_shared.so" "$out/onnxruntime/libonnxruntime_providers_shared.so"
  ln -sfn "libonnxruntime.so.$ORT_VERSION" "$out/onnxruntime/libonnxruntime.so.1"
  ln -sfn "libonnxruntime.so.1" "$out/onnxruntime/libonnxruntime.so"
  say "image context in $out ($(du -sh "$out" | cut -f1))"
}

copy_if_changed() { cmp -s "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }

# gpu-runtime PREFIX [--no-tensorrt]: the GPU libraries as PyPI wheels in a venv at PREFIX
# (scripts/requirements-gpu.txt: onnxruntime-gpu 1.31.1, the CUDA 13.0.2 runtime, cuBLAS, cuFFT,
# cuRAND, NVRTC, nvJitLink, cuDNN 9; scripts/requirements-gpu-tensorrt.txt: TensorRT 10 from
# NVIDIA's index, pypi.nvidia.com). Download: about 1.6 GB from PyPI plus TensorRT's libraries.
# Writes PREFIX/lib.conf (every directory holding those libraries: /etc/ld.so.conf.d in the
# image, LD_LIBRARY_PATH on a host) and PREFIX/lib/libonnxruntime.so.1.31.1 (ORT_DYLIB_PATH), then
# checks that every library resolves its dependencies (libcuda.so.1 comes with the driver).
install_gpu_runtime() {
  local prefix=${1:-} tensorrt=1 stamp trt_stamp reqs=$REPO/scripts/requirements-gpu.txt
  local trt_reqs=$REPO/scripts/requirements-gpu-tensorrt.txt
  [ -n "$prefix" ] || { say "usage: scripts/setup.sh gpu-runtime PREFIX [--no-tensorrt]"; exit 2; }
  [ "${2:-}" = --no-tensorrt ] && tensorrt=0
  stamp=$(sha256sum <"$reqs" | cut -c1-16)
  trt_stamp=trt-$(sha256sum <"$trt_reqs" | cut -c1-16)
  # --no-deps: the files pin every wheel; onnxruntime-gpu's Python dependencies are not needed.
  local pip_install=(-q --no-cache-dir --no-deps --only-binary=:all: -r)
  if [ ! -f "$prefix/.acufarm-$stamp" ]; then
    # Only ever clear a folder this target made (or an empty one).
    if [ -e "$prefix" ] && [ -n "$(ls -A "$prefix")" ] && ! ls "$prefix"/.acufarm-* >/dev/null 2>&1; then
      say "$prefix exists and was not made by gpu-runtime; choose another PREFIX"; exit 1
    fi
    ensure_venv
    say "installing the GPU runtime wheels into $prefix (about 1.6 GB from PyPI)"
    rm -rf "$prefix"
    python3 -m venv "$prefix"
    "$prefix/bin/pip" install "${pip_install[@]}" "$reqs"
    touch "$prefix/.acufarm-$stamp"
  fi
  if [ $tensorrt = 1 ] && [ ! -f "$prefix/.acufarm-$trt_stamp" ]; then
    if ! python3 -c 'import socket; socket.create_connection(("pypi.nvidia.com", 443), timeout=10).close()' 2>/dev/null; then
      say "cannot reach pypi.nvidia.com, the only index with TensorRT's wheels; pass --no-tensorrt to install and check the rest"
      exit 1
    fi
    say "installing TensorRT 10 into $prefix (from pypi.nvidia.com)"
    "$prefix/bin/pip" install "${pip_install[@]}" "$trt_reqs"
    rm -f "$prefix"/.acufarm-trt-*
    touch "$prefix/.acufarm-$trt_stamp"
  fi
  local site; site=$("$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  find "$site" -name 'lib*.so*' -printf '%h\n' | sort -u >"$prefix/lib.conf"
  # ORT_DYLIB_PATH=PREFIX/lib/libonnxruntime.so.1.31.1. ONNX Runtime loads its providers from the
  # folder of the path it was loaded by, so they are linked beside it.
  mkdir -p "$prefix/lib"
  local f
  for f in "$site"/onnxruntime/capi/libonnxruntime*.so*; do ln -sfn "$f" "$prefix/lib/$(basename "$f")"; done
  check_gpu_runtime "$prefix" "$site" $tensorrt
}

check_gpu_runtime() {
  local prefix=$1 site=$2 tensorrt=$3 lib missing=() libpath
  libpath=$(paste -sd: "$prefix/lib.conf")
  for lib in "$site"/onnxruntime/capi/libonnxruntime_providers_*.so $(find "$site/nvidia" -name 'lib*.so*'); do
    [ $tensorrt = 0 ] && [[ $lib == *providers_tensorrt.so ]] && continue
    while read -r name; do missing+=("$(basename "$lib"): $name"); done < <(
      LD_LIBRARY_PATH=$libpath ldd "$lib" | awk '/not found/ && $1 != "libcuda.so.1" {print $1}' | sort -u)
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "the GPU runtime in $prefix is incomplete; these libraries are not found:"; printf '  %s\n' "${missing[@]}" >&2
    exit 1
  fi
  [ $tensorrt = 1 ] || say "WARNING: --no-tensorrt: TensorRT is not installed and libonnxruntime_providers_tensorrt.so was not checked"
  say "GPU runtime in $prefix: every library resolves (libcuda.so.1 comes with the NVIDIA driver)"
}

# The install steps of deploy/docker/Dockerfile's runtime stages (run as root inside a build).
image_base() {
  # ca-certificates (S3 and OTLP over https), the acufarm user and group (10001); apt's lists and
  # caches go (the debootstrap base, unlike debian:bookworm-slim, keeps them).
  apt_install ca-certificates "$@"
  apt-get clean
  rm -rf /var/lib/apt/lists/*
  getent group acufarm >/dev/null || groupadd --gid 10001 acufarm
  id -u acufarm >/dev/null 2>&1 || useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/acufarm \
    --no-create-home --shell /usr/sbin/nologin acufarm
  install -d -o 10001 -g 10001 -m 0750 /var/lib/acufarm
}

image_worker_dirs() {
  # The engine and download cache (a volume; TensorRT engines in trt-cache/) and the bundle mount point.
  install -d -o 10001 -g 10001 -m 0750 /var/cache/acufarm /var/cache/acufarm/trt-cache
  install -d -m 0755 /bundle /opt/acufarm/onnxruntime
}

image_worker_gpu() {
  image_base python3 python3-venv
  install_gpu_runtime /opt/acufarm/gpu-runtime
  cp /opt/acufarm/gpu-runtime/lib.conf /etc/ld.so.conf.d/acufarm-gpu.conf
  ldconfig
  image_worker_dirs
}

case "${1:-runtime}" in
  runtime) install_runtime ;;
  deploy-tools) install_deploy_tools ;;
  containers) install_containers ;;
  image-context) image_context "${2:-}" ;;
  gpu-runtime) install_gpu_runtime "${2:-}" "${3:-}" ;;
  image-coordinator) image_base ;;
  image-worker-cpu) image_worker_dirs ;;  # on top of image-coordinator's (the Dockerfile's runtime stage)
  image-worker-gpu) image_worker_gpu ;;
  dev) install_runtime; install_python_env; install_deploy_tools; install_containers; install_mediapipe_env; install_tokenizer_env; install_rust_tools; install_nextest; install_cargo_fuzz; install_test_tools; start_services ;;
  *) say "usage: scripts/setup.sh [runtime|dev|deploy-tools|containers|image-context [DIR]|gpu-runtime PREFIX [--no-tensorrt]|image-coordinator|image-worker-cpu|image-worker-gpu]"; exit 2 ;;
esac
