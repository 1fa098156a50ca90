"""Reference checks of deploy/kubernetes: what each rendered overlay names exists, and matches what
the binary reads and what the Dockerfile builds. Schemas are deploy/kubernetes/check.sh's job.

Run: ~/.cache/acufarm/deploy/bin/python -m pytest -q tests/deploy
"""

import base64
import re

import pytest

import refs

OVERLAYS = refs.overlays()
IMAGE = re.compile(r"^(?:(?P<registry>[^/]*[.:][^/]*|localhost)/)?(?P<path>[a-z0-9._/-]+)(?::(?P<tag>[\w.-]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def fail_all(problems, what):
    if problems:
        pytest.fail(f"{what}:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_dockerfile_stages_or_pinned(overlay):
    stages = refs.dockerfile_stages()
    problems = []
    for doc, spec in refs.pod_specs(refs.render(overlay)):
        for c in refs.containers(spec):
            image = c["image"]
            parsed = IMAGE.match(image)
            if not parsed:
                problems.append(f"{refs.ident(doc)} {c['name']}: `{image}` is not an image reference")
                continue
            name = parsed["path"].rsplit("/", 1)[-1]
            pinned = parsed["digest"] or (parsed["tag"] and parsed["tag"] != "latest")
            if name.startswith("acufarm"):
                stage = name.removeprefix("acufarm-")
                if not name.startswith("acufarm-") or stage not in stages:
                    problems.append(f"{refs.ident(doc)} {c['name']}: `{image}` is not acufarm-<stage> for a stage of "
                                    f"deploy/docker/Dockerfile ({', '.join(sorted(stages))})")
            if not pinned:
                problems.append(f"{refs.ident(doc)} {c['name']}: `{image}` has no tag (or `latest`): pin it")
    fail_all(problems, f"{overlay}: images")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_acufarm_variables_are_read_by_the_binary(overlay):
    docs = refs.render(overlay)
    known = refs.acufarm_env_names()
    made = refs.provided(docs)
    problems = []
    for doc, spec in refs.pod_specs(docs):
        for c in refs.containers(spec):
            names = [e["name"] for e in c.get("env", [])]
            for source in c.get("envFrom", []):
                for field, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if field in source:
                        prefix = source.get("prefix", "")
                        names += [prefix + key for key in made.get((kind, source[field]["name"]), ())]
            problems += [f"{refs.ident(doc)} {c['name']}: {n} is read nowhere in the sources"
                         for n in names if n.startswith("ACUFARM_") and n not in known]
    fail_all(problems, f"{overlay}: ACUFARM_* variables the binary does not read "
                       "(Config fields of coordinator/src/config.rs, \"ACUFARM_…\" literals of the crates)")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_and_configmaps_exist_with_their_keys(overlay):
    docs = refs.render(overlay)
    made, documented = refs.provided(docs), refs.out_of_band()
    problems = []
    for where, kind, name, key in refs.references(docs):
        keys = made.get((kind, name))
        source = "rendered"
        if keys is None:
            keys, source = documented.get((kind, name)), "README's out-of-band list"
        if keys is None:
            problems.append(f"{where}: {kind} {name} is neither rendered nor in the README's out-of-band list")
        elif key is not None and key not in keys:
            problems.append(f"{where}: {kind} {name} ({source}) has no key `{key}` (it has {', '.join(sorted(keys)) or 'none'})")
    pvcs = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for doc, spec in refs.pod_specs(docs):
        for v in spec.get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim and claim not in pvcs:
                problems.append(f"{refs.ident(doc)} volume {v['name']}: PersistentVolumeClaim {claim} is not rendered")
    issuers = {(d["kind"], d["metadata"]["name"]) for d in docs if d["kind"] in ("Issuer", "ClusterIssuer")}
    for doc in docs:
        if doc["kind"] == "Certificate":
            ref = doc["spec"]["issuerRef"]
            if (ref.get("kind", "Issuer"), ref["name"]) not in issuers:
                problems.append(f"{refs.ident(doc)}: issuer {ref.get('kind', 'Issuer')} {ref['name']} is not rendered")
    fail_all(problems, f"{overlay}: missing Secrets, ConfigMaps or keys")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_file_settings_point_into_mounted_volumes(overlay):
    docs = refs.render(overlay)
    documented = refs.out_of_band()
    problems = []
    for doc, spec in refs.pod_specs(docs):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in refs.containers(spec):
            at = f"{refs.ident(doc)} {c['name']}"
            for setting, path in refs.file_settings(c):
                mount = refs.mount_for(c, path)
                if mount is None:
                    problems.append(f"{at}: {setting}={path} is inside no volumeMount of this container")
                    continue
                inside = path[len(mount["mountPath"].rstrip("/")):].lstrip("/")
                keys = refs.volume_keys(volumes[mount["name"]], docs, documented)
                if inside and keys is not None and inside.split("/")[0] not in keys:
                    problems.append(f"{at}: {setting}={path}: volume {mount['name']} at {mount['mountPath']} "
                                    f"holds {', '.join(sorted(keys))}, not {inside}")
            for env in c.get("env", []):
                if env["name"] == "ACUFARM_HOME":
                    mount = refs.mount_for(c, env["value"])
                    if mount is None or mount.get("readOnly"):
                        problems.append(f"{at}: ACUFARM_HOME={env['value']} (the TensorRT cache) is on no writable volume")
    fail_all(problems, f"{overlay}: files the containers are told to read")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_keda_scales_on_max_queue_depth_with_fallback(overlay):
    docs = refs.render(overlay)
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled, f"{overlay}: no ScaledObject"
    http_services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"
                     and any(p.get("name") == "http" for p in d["spec"]["ports"])}
    workers = {d["metadata"]["name"] for d in refs.by_component(docs, "worker")}
    problems = []
    for so in scaled:
        at, spec = refs.ident(so), so["spec"]
        if spec["scaleTargetRef"]["name"] not in workers:
            problems.append(f"{at}: scaleTargetRef {spec['scaleTargetRef']['name']} is not a worker Deployment")
        fallback = spec.get("fallback") or {}
        if not (fallback.get("failureThreshold", 0) > 0 and fallback.get("replicas", 0) > 0):
            problems.append(f"{at}: needs a fallback with failureThreshold and replicas > 0 (a broken scrape must not scale to zero)")
        for i, trigger in enumerate(t for t in spec["triggers"] if t["type"] == "prometheus"):
            meta = trigger["metadata"]
            query = " ".join(meta["query"].split())
            if not re.search(r"\bmax by \(bundle\) \(\s*acufarm_queue_depth\{", query):
                problems.append(f"{at} trigger {i}: the query must take `max by (bundle) (acufarm_queue_depth{{…}})`: {query}")
            if re.search(r"\bsum\b", query):
                problems.append(f"{at} trigger {i}: `sum` counts the queue once per coordinator replica: {query}")
            zero = re.search(r"\bor on\(\) \(0 \* max\(up\{([^}]*)\} == 1\)\)", query)
            if not zero:
                problems.append(f"{at} trigger {i}: an empty queue must read 0 only while a scrape works: "
                                f"`or on() (0 * max(up{{…}} == 1))` is missing: {query}")
            else:
                job = re.search(r'job="([^"]+)"', zero.group(1))
                if not job or job.group(1) not in http_services:
                    problems.append(f"{at} trigger {i}: up{{job=…}} must name the scraped HTTP Service ({', '.join(sorted(http_services))})")
            namespaces = set(re.findall(r'namespace="([^"]+)"', query))
            if namespaces and namespaces != {so["metadata"]["namespace"]}:
                problems.append(f"{at} trigger {i}: the query's namespace {namespaces} is not {so['metadata']['namespace']}")
            if meta.get("ignoreNullValues") != "false":
                problems.append(f"{at} trigger {i}: ignoreNullValues must be \"false\" (an empty result is an error, not 0)")
            if trigger.get("metricType", "AverageValue") != "AverageValue":
                problems.append(f"{at} trigger {i}: KEDA's fallback needs metricType AverageValue")
            if float(meta["threshold"]) <= 0:
                problems.append(f"{at} trigger {i}: threshold must be positive")
    fail_all(problems, f"{overlay}: autoscaling")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_drains_and_coordinator_migrates(overlay):
    docs = refs.render(overlay)
    problems = []
    for worker in refs.by_component(docs, "worker"):
        grace = worker["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if not grace > 0:
            problems.append(f"{refs.ident(worker)}: terminationGracePeriodSeconds must cover a batch's drain (> 0)")
    for coordinator in refs.by_component(docs, "coordinator"):
        spec = coordinator["spec"]["template"]["spec"]
        main = [c for c in spec["containers"] if (c.get("args") or [None])[0] == "coordinator"]
        migrate = [c for c in spec.get("initContainers", []) if c["name"] == "migrate"]
        if not main or not migrate:
            problems.append(f"{refs.ident(coordinator)}: needs a `coordinator` container and a `migrate` initContainer")
            continue
        m, c = migrate[0], main[0]
        if (m.get("args") or [None])[0] != "migrate":
            problems.append(f"{refs.ident(coordinator)}: the migrate initContainer must run `acufarm migrate`")
        if m["image"] != c["image"]:
            problems.append(f"{refs.ident(coordinator)}: migrate runs {m['image']}, the coordinator {c['image']}")
        database = lambda container: {e["name"]: (e.get("value"), e.get("valueFrom"))
                                      for e in container.get("env", []) if e["name"].startswith("ACUFARM_DATABASE_URL")}
        if not database(c) or database(m) != database(c):
            problems.append(f"{refs.ident(coordinator)}: migrate's database settings {database(m)} differ from the coordinator's {database(c)}")
    fail_all(problems, f"{overlay}: drain and migrations")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_commands_are_subcommands_and_flags_of_the_binary(overlay):
    problems = []
    for doc, spec in refs.pod_specs(refs.render(overlay)):
        for c in refs.containers(spec):
            argv = list(c.get("command", [])) + list(c.get("args", []))
            if not argv or argv[0].rsplit("/", 1)[-1] != "acufarm":
                continue
            sub = argv[1] if len(argv) > 1 else None
            if sub not in refs.subcommands():
                problems.append(f"{refs.ident(doc)} {c['name']}: `acufarm {sub}` is no subcommand of cli/src/main.rs")
            if sub == "worker":
                flags = {a.split("=", 1)[0] for a in argv[2:] if a.startswith("--")}
                problems += [f"{refs.ident(doc)} {c['name']}: `acufarm worker {f}` is no flag of cli/src/cmd/worker.rs"
                             for f in sorted(flags - refs.worker_flags())]
    fail_all(problems, f"{overlay}: commands")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_select_what_they_mean(overlay):
    docs = refs.render(overlay)
    pods = list(refs.pod_labels(docs))
    problems = []
    for doc in docs:
        at, kind = refs.ident(doc), doc["kind"]
        if kind == "Service":
            selected = [spec for _, labels, spec in pods if refs.matches(doc["spec"]["selector"], labels)]
            if not selected:
                problems.append(f"{at}: its selector matches no pod template")
            names = {p.get("name") for s in selected for c in s["containers"] for p in c.get("ports", [])}
            problems += [f"{at}: targetPort {p['targetPort']} is no container port of the pods it selects"
                         for p in doc["spec"]["ports"] if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names]
        elif kind == "PodDisruptionBudget" and not any(refs.matches(doc["spec"]["selector"], l) for _, l, _ in pods):
            problems.append(f"{at}: its selector matches no pod template")
        elif kind == "NetworkPolicy":
            selectors = [("podSelector", doc["spec"]["podSelector"])] if doc["spec"]["podSelector"] else []
            for direction, peer_field in (("ingress", "from"), ("egress", "to")):
                for rule in doc["spec"].get(direction, []):
                    selectors += [(f"{direction} podSelector", p["podSelector"]) for p in rule.get(peer_field, [])
                                  if "podSelector" in p and "namespaceSelector" not in p]
            problems += [f"{at}: {what} {sel} matches no pod template" for what, sel in selectors
                         if not any(refs.matches(sel, l) for _, l, _ in pods)]
        elif kind == "ServiceMonitor":
            services = [d for d in docs if d["kind"] == "Service" and refs.matches(doc["spec"]["selector"], d["metadata"].get("labels", {}))]
            if len(services) != 1:
                problems.append(f"{at}: selects {len(services)} Services ({', '.join(refs.ident(s) for s in services)}), want the HTTP one")
            ports = {p.get("name") for s in services for p in s["spec"]["ports"]}
            problems += [f"{at}: endpoint port {e['port']} is not a port name of the selected Service"
                         for e in doc["spec"]["endpoints"] if e.get("port") not in ports]
    fail_all(problems, f"{overlay}: selectors")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_containers_are_hardened(overlay):
    problems = []
    for doc, spec in refs.pod_specs(refs.render(overlay)):
        pod = spec.get("securityContext", {})
        for c in refs.containers(spec):
            sc = dict(pod, **{k: v for k, v in c.get("securityContext", {}).items()})
            at = f"{refs.ident(doc)} {c['name']}"
            for key, want in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
                if sc.get(key) is not want:
                    problems.append(f"{at}: securityContext.{key} must be {str(want).lower()}")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                problems.append(f"{at}: securityContext.capabilities.drop must hold ALL")
            if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
                problems.append(f"{at}: seccompProfile must be RuntimeDefault")
            if "resources" not in c or not c["resources"].get("requests") or not c["resources"].get("limits"):
                problems.append(f"{at}: needs resource requests and limits")
    fail_all(problems, f"{overlay}: security contexts")


def test_dev_secrets_are_placeholders():
    """The dev overlay's committed secret files are placeholders; real values must not be committed."""
    problems = []
    for doc in refs.render("overlays/dev"):
        if doc["kind"] == "Secret":
            for key, value in (doc.get("data") or {}).items():
                if "change-me" not in base64.b64decode(value).decode(errors="replace"):
                    problems.append(f"{refs.ident(doc)} {key}")
    fail_all(problems, "deploy/kubernetes/overlays/dev/secrets holds real values (keep them out of git; "
                       "the committed files must stay change-me placeholders)")
