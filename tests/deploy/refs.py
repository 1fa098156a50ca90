"""Helpers of the deployment reference checks: render kustomizations, and derive from the sources
what the binary reads (ACUFARM_* variables, subcommands, worker flags) and what the Dockerfile
builds (its stages), so the checks compare manifests against the code, not against a hand list."""

import functools
import pathlib
import re
import shutil
import subprocess

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
README = KUBERNETES / "README.md"
SOURCE_DIRS = ["cli/src", "worker/src", "storage/src", "coordinator/src"]
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def overlays():
    """Every overlay folder with a kustomization, as paths relative to deploy/kubernetes."""
    found = sorted(f"overlays/{p.parent.name}" for p in KUBERNETES.glob("overlays/*/kustomization.yaml"))
    assert found, f"no overlays/*/kustomization.yaml under {KUBERNETES}"
    return found


@functools.lru_cache(maxsize=None)
def render(target):
    """The documents `kubectl kustomize deploy/kubernetes/TARGET` prints."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH: it renders the kustomizations (kubectl kustomize)"
    done = subprocess.run([kubectl, "kustomize", str(KUBERNETES / target)], capture_output=True, text=True)
    assert done.returncode == 0, f"kubectl kustomize {target} failed:\n{done.stderr}"
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def ident(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- what the sources say -----------------------------------------------------------------------

def _uncommented(text):
    """`text` with whole-line `//` comments blanked (same length, so offsets hold)."""
    return re.sub(r"^[ \t]*//[^\n]*", lambda m: " " * len(m.group(0)), text, flags=re.M)


def _block(text, opening):
    """The text between `opening` (ending in `{`) and its matching `}`, comments blanked."""
    text = _uncommented(text)
    start = text.index(opening) + len(opening)
    depth, i = 1, start
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[start:i - 1]


@functools.lru_cache(maxsize=None)
def acufarm_env_names():
    """ACUFARM_* names the binary reads: `ACUFARM_<FIELD>` for each `pub` field of the
    coordinator's `struct Config`, plus every "ACUFARM_…" string literal in the crates' sources
    (clap `env = "…"` attributes included)."""
    config = (REPO / "coordinator/src/config.rs").read_text()
    fields = re.findall(r"^\s*pub\s+([a-z_][a-z0-9_]*)\s*:", _block(config, "pub struct Config {"), re.M)
    assert fields, "no `pub` fields found in struct Config of coordinator/src/config.rs"
    names = {f"ACUFARM_{f.upper()}" for f in fields}
    for folder in SOURCE_DIRS:
        for path in (REPO / folder).rglob("*.rs"):
            names.update(re.findall(r'"(ACUFARM_[A-Z0-9_]+)"', path.read_text()))
    return frozenset(names)


def _kebab(name):
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


# One attribute, `#[...]`, with brackets inside its strings allowed.
ATTR = r'#\[(?:[^\[\]"]|"(?:[^"\\]|\\.)*")*\]'
PREFIX = rf"((?:\s*{ATTR})*)"


def _top_level(body):
    """`body` with everything inside nested () and {} blanked, so only its own items and
    attributes remain."""
    out, depth, in_string = [], 0, False
    for ch in body:
        if ch == '"':
            in_string = not in_string
        if not in_string and ch in "({":
            depth += 1
        out.append(ch if depth == 0 or ch == "\n" else " ")
        if not in_string and ch in ")}":
            depth -= 1
    return "".join(out)


@functools.lru_cache(maxsize=None)
def subcommands():
    """`acufarm` subcommands: the variants of `enum Command` in cli/src/main.rs (kebab-case, or
    the name a `#[command(name = "…")]` gives)."""
    body = _top_level(_block((REPO / "cli/src/main.rs").read_text(), "enum Command {"))
    found = set()
    for attrs, variant in re.findall(rf"((?:\s*{ATTR})*)\s*([A-Z][A-Za-z0-9]*)\s*(?:,|\Z)", body):
        renamed = re.search(r'name\s*=\s*"([^"]+)"', attrs)
        found.add(renamed.group(1) if renamed else _kebab(variant))
    assert found, "no variants found in enum Command of cli/src/main.rs"
    return frozenset(found)


def _long_flags(path, struct):
    body = _block((REPO / path).read_text(), f"pub struct {struct} {{")
    flags = set()
    for attrs, field in re.findall(PREFIX + r"\s*(?:pub\s+)?([a-z_][a-z0-9_]*)\s*:", body):
        arg = re.search(r"#\[arg\((.*)\)\]", attrs)
        if arg and re.search(r"\blong\b", arg.group(1)):
            renamed = re.search(r'long\s*=\s*"([^"]+)"', arg.group(1))
            flags.add("--" + (renamed.group(1) if renamed else field.replace("_", "-")))
    return flags


@functools.lru_cache(maxsize=None)
def worker_flags():
    """Long flags of `acufarm worker`: its Args and the ClientArgs it flattens."""
    flags = _long_flags("cli/src/cmd/worker.rs", "Args") | _long_flags("cli/src/cmd/client.rs", "ClientArgs")
    assert "--bundle" in flags, "could not read the worker's flags from cli/src/cmd/worker.rs"
    return frozenset(flags)


def dockerfile_stages():
    """The image stages of deploy/docker/Dockerfile: `FROM … AS <stage>` stages that set an
    ENTRYPOINT (the build-only stages — compile, prebuilt, binary — are no images)."""
    assert DOCKERFILE.exists(), (
        f"{DOCKERFILE.relative_to(REPO)} does not exist: the image names acufarm-<stage> are checked "
        "against its build stages, so it must be written first")
    stages = set()
    for block in re.split(r"^(?=\s*FROM\s)", DOCKERFILE.read_text(), flags=re.M | re.I):
        named = re.match(r"\s*FROM\s+\S+(?:\s+\S+)*?\s+AS\s+([A-Za-z0-9._-]+)\s*$", block.splitlines()[0] if block.strip() else "", re.I)
        if named and re.search(r"^\s*ENTRYPOINT\s", block, re.M | re.I):
            stages.add(named.group(1).lower())
    assert stages, f"{DOCKERFILE.relative_to(REPO)} names no image stage (FROM … AS <stage> with an ENTRYPOINT)"
    return stages


# --- what the README documents -----------------------------------------------------------------

def out_of_band():
    """{(kind, name): keys} of the Secrets and ConfigMaps the README says to create by hand: the
    list between `<!-- out-of-band:begin -->` and `<!-- out-of-band:end -->`, one
    "- Secret `name` …: `key`, `key`" line each."""
    assert README.exists(), f"{README.relative_to(REPO)} does not exist: it lists the out-of-band Secrets"
    text = README.read_text()
    match = re.search(r"<!-- out-of-band:begin -->(.*?)<!-- out-of-band:end -->", text, re.S)
    assert match, f"{README.relative_to(REPO)} has no <!-- out-of-band:begin --> … end list"
    found = {}
    for line in match.group(1).splitlines():
        item = re.match(r"\s*[-*]\s+(Secret|ConfigMap)\s+`([^`]+)`[^:]*:(.*)$", line)
        if item:
            found[(item.group(1), item.group(2))] = set(re.findall(r"`([^`]+)`", item.group(3)))
    assert found, "the README's out-of-band list has no `- Secret `name`: `key`` line"
    return found


# --- what the manifests hold --------------------------------------------------------------------

def pod_specs(docs):
    """(workload, pod spec) for every workload's pod template."""
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "CronJob":
            yield doc, doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def pod_labels(docs):
    """(workload, pod template labels, pod spec) for every workload."""
    for doc in docs:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]["metadata"].get("labels", {}), doc["spec"]["template"]["spec"]


def containers(spec):
    return list(spec.get("initContainers", [])) + list(spec.get("containers", []))


def by_component(docs, component, kind="Deployment"):
    found = [d for d in docs if d["kind"] == kind and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component]
    assert found, f"no {kind} labelled app.kubernetes.io/component={component}"
    return found


def provided(docs):
    """{(kind, name): keys} of the Secrets and ConfigMaps the output makes, including the Secrets
    cert-manager Certificates write (tls.crt, tls.key, ca.crt)."""
    made = {}
    for doc in docs:
        if doc["kind"] in ("Secret", "ConfigMap"):
            keys = set()
            for field in ("data", "stringData", "binaryData"):
                keys |= set(doc.get(field) or {})
            made[(doc["kind"], doc["metadata"]["name"])] = keys
        elif doc["kind"] == "Certificate" and doc["apiVersion"].startswith("cert-manager.io/"):
            made[("Secret", doc["spec"]["secretName"])] = {"tls.crt", "tls.key", "ca.crt"}
    return made


def references(docs):
    """(where, kind, name, key or None) for every Secret / ConfigMap a document names."""
    refs = []
    for doc, spec in pod_specs(docs):
        at = ident(doc)
        for volume in spec.get("volumes", []):
            sources = [volume]
            sources += volume.get("projected", {}).get("sources", [])
            for source in sources:
                for field, kind, name_field in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name")):
                    if field in source:
                        ref = source[field]
                        name = ref.get(name_field) or ref.get("name")
                        items = ref.get("items") or [None]
                        refs += [(f"{at} volume {volume['name']}", kind, name, item and item["key"]) for item in items]
        for container in containers(spec):
            where = f"{at} container {container['name']}"
            for source in container.get("envFrom", []):
                for field, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                    if field in source and not source[field].get("optional"):
                        refs.append((f"{where} envFrom", kind, source[field]["name"], None))
            for env in container.get("env", []):
                value_from = env.get("valueFrom", {})
                for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                    if field in value_from and not value_from[field].get("optional"):
                        ref = value_from[field]
                        refs.append((f"{where} env {env['name']}", kind, ref["name"], ref["key"]))
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            for i, endpoint in enumerate(doc["spec"].get("endpoints", [])):
                tls = endpoint.get("tlsConfig", {})
                for field in ("ca", "cert"):
                    for sub, kind in (("secret", "Secret"), ("configMap", "ConfigMap")):
                        if sub in tls.get(field, {}):
                            ref = tls[field][sub]
                            refs.append((f"{ident(doc)} endpoints[{i}].tlsConfig.{field}", kind, ref["name"], ref.get("key")))
                if "keySecret" in tls:
                    refs.append((f"{ident(doc)} endpoints[{i}].tlsConfig.keySecret", "Secret", tls["keySecret"]["name"], tls["keySecret"].get("key")))
    return refs


def volume_keys(volume, docs, documented):
    """The file names a Secret / ConfigMap volume shows, when they are known; None otherwise."""
    for field, kind, name_field in (("secret", "Secret", "secretName"), ("configMap", "ConfigMap", "name")):
        if field in volume:
            ref = volume[field]
            if ref.get("items"):
                return {item["path"] for item in ref["items"]}
            name = ref.get(name_field)
            known = provided(docs).get((kind, name))
            return known if known is not None else documented.get((kind, name))
    return None


def file_settings(container):
    """(setting, path) for every file or folder a container is told to read."""
    paths = []
    for env in container.get("env", []):
        name, value = env["name"], env.get("value")
        if value and (name.endswith("_FILE") or name in ("ACUFARM_CA_CERT", "ACUFARM_TLS_CERT", "ACUFARM_TLS_KEY", "ACUFARM_TLS_CLIENT_CA", "ACUFARM_REDIS_CA_CERT", "ACUFARM_CLIENT_CERT", "ACUFARM_CLIENT_KEY")):
            paths.append((f"env {name}", value))
    args = list(container.get("command", [])) + list(container.get("args", []))
    for i, arg in enumerate(args):
        for flag in ("--token-file", "--ca-cert", "--client-cert", "--client-key", "--bundle", "--config"):
            if arg == flag and i + 1 < len(args):
                paths.append((flag, args[i + 1]))
            elif arg.startswith(flag + "="):
                paths.append((flag, arg.split("=", 1)[1]))
    return paths


def mount_for(container, path):
    """The volumeMount whose mountPath holds `path` (the deepest one), or None."""
    best = None
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/")
        if (path == root or path.startswith(root + "/")) and (best is None or len(root) > len(best["mountPath"].rstrip("/"))):
            best = mount
    return best


def matches(selector, labels):
    """Whether a label selector (matchLabels / matchExpressions, or a plain map) selects `labels`."""
    if selector is None:
        return False
    plain = {k: v for k, v in selector.items() if k not in ("matchLabels", "matchExpressions")}
    wanted = dict(selector.get("matchLabels", {}), **plain)
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) \
                or (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True
