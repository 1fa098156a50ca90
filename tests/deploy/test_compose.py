"""References of deploy/compose/compose.yaml checked against the sources they name: the stages of
deploy/docker/Dockerfile, the ACUFARM_* variables the binary reads, the files `acufarm secrets
init` writes, the variables .env.example documents.

Run: $ACUFARM_HOME/deploy/bin/python -m pytest -q tests/deploy
"""

import os
import pathlib
import re
import subprocess

import pytest
import yaml

import refs  # tests/deploy/refs.py: what the sources say (ACUFARM_* names, Dockerfile stages)

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
SECRETS_TARGET = "/run/secrets/acufarm"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
RUNTIME_STAGES = {"coordinator", "worker-cpu", "worker-gpu"}


# --- helpers -------------------------------------------------------------------------------------


def compose():
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services():
    return compose()["services"]


def with_defaults(text):
    """`${X:-default}` → default, `${X}` → "" (what compose.yaml means with nothing set)."""
    return VARIABLE.sub(lambda m: m.group(3) or "", str(text))


def env_example():
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: with_defaults(value) for key, value in env.items()}


def command(service):
    cmd = service.get("command") or []
    return [with_defaults(arg) for arg in (cmd.split() if isinstance(cmd, str) else cmd)]


def mounts(service):
    """(source, target) of each volume, with the defaults of its variables."""
    out = []
    for volume in service.get("volumes") or []:
        parts = with_defaults(volume).split(":")
        out.append((parts[0], parts[1]))
    return out


def secrets_init_files():
    binary = pathlib.Path(os.environ.get("ACUFARM_BIN", ROOT / "target/debug/acufarm"))
    if not binary.exists():
        pytest.skip(f"no acufarm binary at {binary} (cargo build -p acufarm-cli, or set ACUFARM_BIN)")
    text = subprocess.run([binary, "secrets", "init", "--help"], capture_output=True, text=True, check=True).stdout
    sentence = re.search(r"Write what is missing of:(.*?)\. Existing files are kept", " ".join(text.split())).group(1)
    return set(re.findall(r"[a-z][a-z0-9/-]*(?:\.pem)?", sentence.replace("with --postgres", "")))


def secret_paths(service):
    """Every /run/secrets/acufarm/… path a service names in its environment or command."""
    values = list(environment(service).values()) + command(service)
    return {value for value in values if value.startswith(SECRETS_TARGET + "/")}


# --- tests ---------------------------------------------------------------------------------------


def test_acufarm_images_are_dockerfile_stages():
    stages = refs.dockerfile_stages()
    assert RUNTIME_STAGES <= stages, f"deploy/docker/Dockerfile lacks stages {RUNTIME_STAGES - stages}"
    seen = set()
    for name, service in services().items():
        image = with_defaults(service["image"])
        if "acufarm-" not in image:
            continue
        match = re.fullmatch(r"(?:.*/)?acufarm-([a-z0-9-]+):[A-Za-z0-9._-]+", image)
        assert match, f"{name}: image {image} is not acufarm-<stage>:<tag>"
        assert match.group(1) in RUNTIME_STAGES, f"{name}: {image} names no runtime stage of deploy/docker/Dockerfile"
        seen.add(match.group(1))
    assert seen == RUNTIME_STAGES


def test_upstream_images_are_pinned_and_overridable():
    for name, service in services().items():
        raw = service["image"]
        assert VARIABLE.fullmatch(raw), f"{name}: image {raw} cannot be overridden by a variable"
        image = with_defaults(raw)
        if "acufarm-" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" in repository, f"{name}: {image} names no registry and tag"
        assert tag and tag != "latest" and "/" not in tag, f"{name}: {image} is not pinned to a tag"


def test_acufarm_variables_are_read_by_the_binary():
    known = refs.acufarm_env_names()
    assert "ACUFARM_DATABASE_URL_FILE" in known and "ACUFARM_CA_CERT" in known
    for name, service in services().items():
        unknown = {key for key in environment(service) if key.startswith("ACUFARM_")} - known
        assert not unknown, f"{name}: the binary reads none of {sorted(unknown)}"


def test_every_file_a_service_names_is_mounted():
    for name, service in services().items():
        env = environment(service)
        paths = [value for key, value in env.items() if key.endswith("_FILE") or key in ("ACUFARM_CA_CERT", "ACUFARM_TLS_CERT", "ACUFARM_TLS_KEY")]
        args = command(service)
        paths += [args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--token-file", "--ca-cert", "--config")]
        targets = [target for _, target in mounts(service)]
        for path in paths:
            assert any(path.startswith(target.rstrip("/") + "/") for target in targets), f"{name}: {path} lies in no volume of the service ({targets})"


def test_secret_files_are_ones_secrets_init_writes():
    written = secrets_init_files()
    assert {"ca.pem", "coordinator.pem", "worker-token", "database-url"} <= written
    certs = services()["certs"]
    assert "--postgres" in command(certs)
    [(certs_source, _)] = mounts(certs)
    named = {}
    for name, service in services().items():
        # A service mounts the certs service's folder, or (workers) its worker/ part alone.
        folder = ""
        for source, target in mounts(service):
            if target == SECRETS_TARGET:
                assert source in (certs_source, certs_source + "/worker"), f"{name} mounts {source}, not the certs service's {certs_source}"
                folder = "worker/" if source.endswith("/worker") else ""
        for path in secret_paths(service):
            named.setdefault(folder + path.rsplit("/", 1)[1], set()).add(name)
    prometheus = (COMPOSE_DIR / "prometheus/prometheus.yml").read_text()
    for path in re.findall(SECRETS_TARGET + r"/([\w.-]+)", prometheus):
        named.setdefault(path, set()).add("prometheus.yml")
    missing = {file: users for file, users in named.items() if file not in written}
    assert not missing, f"`acufarm secrets init` writes none of {missing}"


def test_every_variable_is_documented_in_env_example():
    text = COMPOSE_FILE.read_text()
    documented = env_example()
    used = {}
    for match in VARIABLE.finditer(text):
        used.setdefault(match.group(1), set()).add(match.group(3))
    for variable, defaults in used.items():
        assert variable in documented or defaults != {None}, f"${{{variable}}} has no default and no entry in .env.example"
        assert variable in documented, f"${{{variable}}} is not documented in .env.example"
        defaults.discard(None)
        assert len(defaults) <= 1, f"${{{variable}}} has several defaults: {defaults}"
        if defaults:
            assert documented[variable] == next(iter(defaults)), f".env.example says {variable}={documented[variable]}, compose.yaml defaults to {defaults}"
    stale = set(documented) - set(used) - {"COMPOSE_PROFILES"}
    assert not stale, f".env.example documents variables compose.yaml does not use: {sorted(stale)}"
    assert documented["COMPOSE_PROFILES"] == "gpu"


def test_profiles_and_the_gpu_reservation():
    svc = services()
    assert svc["worker"]["profiles"] == ["gpu"] and svc["worker-cpu"]["profiles"] == ["cpu"]
    [device] = svc["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert "tensorrt,cuda,cpu" in command(svc["worker"]) and "cpu" in command(svc["worker-cpu"])
    for name in ("worker", "worker-cpu"):
        assert svc[name]["init"] is True and "stop_grace_period" in svc[name]
        assert ("../../models/tiny", "/bundle") in [(s, t) for s, t in mounts(svc[name])]
        assert any(v.endswith(":ro") for v in svc[name]["volumes"] if ":/bundle:" in v)
    assert "name" not in compose(), "Debian's docker-compose 1.29 refuses a top-level name:"


def test_ports_are_published_on_loopback_only():
    for name, service in services().items():
        for port in service.get("ports") or []:
            assert with_defaults(port).startswith("127.0.0.1:"), f"{name}: {port} is published beyond 127.0.0.1"
    svc = services()
    assert svc["redis"]["networks"] == ["data"] and svc["postgres"]["networks"] == ["data"]
    assert compose()["networks"]["data"]["internal"] is True


def test_build_context_ignore_files():
    containerignore = (ROOT / ".containerignore").read_text()
    assert (ROOT / ".dockerignore").read_text() == containerignore, ".dockerignore must be a copy of .containerignore"
    patterns = {line.strip() for line in containerignore.splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", "target", "out"} <= patterns
    assert not any(p.startswith("deploy/docker") for p in patterns), "deploy/docker/prebuilt/ must stay in the build context"
