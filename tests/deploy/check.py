#!/usr/bin/env python3
"""Checks the deployment kit (deploy/) against itself and against the binary.

tests/deploy/check.sh runs it after the linters (hadolint, kubernetes-validate,
docker-compose config). Two parts:

1. Static: the Kubernetes manifests, the compose file, the Dockerfile and the
   Grafana dashboard agree with each other and with the binary's operational
   interface: probes on /ready and /health on the admin port that the container's
   args/env/config configure, on an address the kubelet reaches; a grace period
   above the drain delay + the close timeout + a margin; Services and the Ingress
   on the public port, never the admin port; the securityContext; the JWT secret
   from a Secret; the chat's and the gateway's bus on a Redis Service (several
   chat replicas only on one), PodDisruptionBudgets that let a drain evict a pod;
   two gateway nodes and two chat nodes on the compose Redis; every metric the
   dashboard queries is one the binary exports; and so on.

2. Live (skipped with --static): target/release/chinwag run with exactly the
   args and env of each chinwag container (the chat and gateway Deployments, each
   compose service, the image's default CMD): 0.0.0.0 becomes free loopback
   ports, the bus a local redis-server, the image's files and the ConfigMap
   volumes a copy under a temporary folder standing for the container's root;
   as an unprivileged user (setpriv, uid 65534) in a folder it cannot write.
   Then /health and /ready answer 200 on the admin port, /metrics has every
   metric of the dashboard that applies, JSON logs are JSON, and SIGTERM turns
   /ready to 503 at once, keeps serving for the drain delay and exits 0 within the
   grace period. For compose, the example handler runs too and a message crosses
   from gateway node 2 to node 1; on the chat's nodes, alice on node 1 reads bob's
   line from node 2, and her name is refused (409) on node 2.

Every problem is reported, then it exits 1; everything it starts is stopped.

Usage: check.py --binary target/release/chinwag --python tests/.venv/bin/python [--static]
"""

import argparse
import base64
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DASHBOARD = DEPLOY / "grafana" / "chinwag.json"

# The binary's operational interface (the admin listener's spec).
CLOSE_TIMEOUT = 5  # seconds the process waits for close handshakes after the 1001s
KEEPALIVE = 30  # seconds of silence before the server pings
MARGIN = 5  # seconds a grace period must leave beyond drain delay + close timeout
DEFAULT_ADMIN = "127.0.0.1:9091"
# Every metric the admin listener exports. The dashboard must query only these (a
# typo is caught here, before any live run) and all of them; the live run then
# checks each one the dashboard queries against a real /metrics.
SPEC_METRICS = {
    "chinwag_connections", "chinwag_connections_opened_total", "chinwag_handshakes_refused_total",
    "chinwag_messages_received_total", "chinwag_received_bytes_total", "chinwag_messages_sent_total",
    "chinwag_sent_bytes_total", "chinwag_disconnects_total", "chinwag_outgoing_backlog_bytes",
    "chinwag_backlogged_connections", "chinwag_broadcast_delivery_seconds", "chinwag_chat_users",
    "chinwag_chat_rooms", "chinwag_chat_cluster_users", "chinwag_chat_malformed_entries_total",
    "chinwag_gateway_events_published_total", "chinwag_gateway_commands_total",
    "chinwag_gateway_bus_connected", "chinwag_gateway_outbox_events", "chinwag_gateway_events_dropped_total",
    "chinwag_draining", "chinwag_hook_panics_total", "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
    "chinwag_hub_lock_acquisitions_total", "chinwag_hub_lock_contended_total", "chinwag_hub_lock_wait_seconds_total",
    "chinwag_hub_lock_held_seconds_total",
}


def applies(metric, kind):
    """Which process exports which metric: chinwag_chat_* only the chat,
    chinwag_gateway_* only the gateway, every other name both."""
    if metric.startswith("chinwag_chat_"):
        return kind == "chat"
    if metric.startswith("chinwag_gateway_"):
        return kind == "gateway"
    return True


FAILURES = []
PASSED = [0]
VERBOSE = [False]


def fail(where, message):
    FAILURES.append(f"{where}: {message}")
    print(f"  FAIL {where}: {message}", flush=True)


def ok(where, message):
    PASSED[0] += 1
    if VERBOSE[0]:
        print(f"  ok   {where}: {message}", flush=True)


def check(condition, where, message):
    if condition:
        ok(where, message)
    else:
        fail(where, message)
    return condition


# --- the Dockerfiles --------------------------------------------------------------


class Image:
    """The final stage of a Dockerfile: what a container of it starts with."""

    def __init__(self, path, binary):
        self.path = path
        self.entrypoint, self.cmd, self.workdir, self.user = [], [], "/", None
        self.expose, self.stopsignal, self.files = [], None, []
        self.healthcheck = False
        text = re.sub(r"\\\n", " ", path.read_text())
        stages = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            word, _, rest = line.partition(" ")
            word = word.upper()
            if word == "FROM":
                stages.append([])
            if stages:
                stages[-1].append((word, rest.strip()))
        for word, rest in stages[-1]:
            if word in ("ENTRYPOINT", "CMD"):
                value = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]
                if word == "ENTRYPOINT":
                    self.entrypoint = value
                else:
                    self.cmd = value
            elif word == "WORKDIR":
                self.workdir = rest
            elif word == "USER":
                self.user = rest
            elif word == "EXPOSE":
                self.expose += [p.split("/")[0] for p in rest.split()]
            elif word == "STOPSIGNAL":
                self.stopsignal = rest
            elif word == "HEALTHCHECK":
                self.healthcheck = rest.upper() != "NONE"
            elif word == "COPY":
                parts = [p for p in rest.split() if not p.startswith("--chown") and not p.startswith("--chmod")]
                if parts[0].startswith("--from="):
                    # The one file a build stage hands over: the binary under test.
                    src, dest = parts[1], parts[2]
                    if Path(src).name != "chinwag":
                        raise SystemExit(f"{path}: COPY {rest}: check.py knows only the chinwag binary from a stage")
                    self.files.append((dest, Path(binary)))
                else:
                    *srcs, dest = parts
                    for src in srcs:
                        self.files.append((dest, ROOT / src))

    def make_root(self, root):
        """Lays the image's files out under `root`, as the container sees them."""
        for dest, src in self.files:
            target = root / dest.lstrip("/")
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True)
            else:
                if dest.endswith("/"):
                    target = target / src.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
        (root / self.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)


def check_dockerfile(image):
    where = "deploy/Dockerfile"
    user = (image.user or "").split(":")[0]
    check(user.isdigit() and int(user) != 0, where, f"runs as a numeric non-root user (USER {image.user})")
    check({"9090", "9091"} <= set(image.expose), where, f"EXPOSE 9090 9091 (has {' '.join(image.expose)})")
    check(image.stopsignal == "SIGTERM", where, "STOPSIGNAL SIGTERM")
    check(image.entrypoint == ["/usr/local/bin/chinwag"], where, f"ENTRYPOINT is the binary ({image.entrypoint})")
    check(image.cmd == ["--addr", "0.0.0.0:9090", "--admin-addr", "0.0.0.0:9091"], where,
          f"default CMD is the chat on 0.0.0.0:9090 with its admin listener on 0.0.0.0:9091 ({image.cmd})")
    text = DOCKERFILE.read_text()
    check(image.healthcheck or re.search(r"^# No HEALTHCHECK", text, re.M), where,
          "a HEALTHCHECK, or a comment saying why there is none")


def dockerignore_patterns():
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def ignored(path, patterns):
    """Whether Docker leaves `path` (relative, with /) out of the build context: the
    last pattern matching it or one of its parent folders decides (`!` keeps)."""

    def regex(pattern):
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + "$")

    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        r = regex(pattern.lstrip("!").strip("/"))
        if any(r.match(p) for p in prefixes):
            result = not keep
    return result


def check_build_context():
    """The files the image builds read are in the build context; local state is not."""
    where = ".dockerignore"
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        ok(where, "not a git checkout: the build context is not checked")
        return
    files = listed.stdout.split()
    patterns = dockerignore_patterns()
    manifest = (ROOT / "Cargo.toml").read_text()
    members = re.findall(r'"([^"]+)"', re.search(r"^members\s*=\s*\[(.*?)\]", manifest, re.S | re.M).group(1))
    needed = ["Cargo.toml", "Cargo.lock", "deploy/docker/skeleton.sh"]
    needed += [f for f in files if any(f.startswith(m.rstrip("/") + "/") for m in members)]
    for dockerfile in (DOCKERFILE, DEPLOY / "handler.Dockerfile"):
        for line in dockerfile.read_text().splitlines():
            words = line.split()
            if words[:1] == ["COPY"] and not words[1].startswith("--from") and words[1] != ".":
                src = words[1].rstrip("/")
                needed += [f for f in files if f == src or f.startswith(src + "/")]
    left_out = sorted({f for f in needed if ignored(f, patterns)})
    check(not left_out, where, f"keeps every file the builds need (left out: {', '.join(left_out[:10]) or 'none'})")
    for local in ("target/release/chinwag", ".git/HEAD", "tests/.venv/bin/python", "fuzz/Cargo.toml",
                  "apps/chat/target/x", "tests/out/x.png"):
        check(ignored(local, patterns), where, f"leaves out {local}")


# --- what a container configures ------------------------------------------------


def flag(args, name):
    """The value of `--name VALUE` or `--name=VALUE` in args (the last one wins)."""
    value = None
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
    return value


class Settings:
    """The settings a chinwag container runs with, from its args, env and config
    file, as the binary resolves them: flag, else environment, else the file."""

    def __init__(self, args, env, read_file, workdir):
        self.kind = "gateway" if args[:1] == ["gateway"] else "chat" if not args or args[0].startswith("-") else args[0]
        self.config, self.config_path = {}, None
        if self.kind == "gateway":
            path = flag(args, "--config") or env.get("CHINWAG_CONFIG") or "conf/socket.yaml"
            self.config_path = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
            text = read_file(self.config_path)
            self.config = (yaml.safe_load(text) or {}).get("gateway", {}) if text is not None else None
        config = self.config or {}
        if self.kind == "gateway":
            self.public = flag(args, "--listen") or env.get("CHINWAG_LISTEN") or config.get("listen") or "127.0.0.1:4000"
        else:
            self.public = flag(args, "--addr") or env.get("CHINWAG_ADDR") or "127.0.0.1:9090"
        # The gateway's and the chat's alike (the chat has no file: config is empty).
        self.bus = flag(args, "--bus") or env.get("CHINWAG_BUS") or config.get("bus") or "in-process"
        self.admin = (flag(args, "--admin-addr") or env.get("CHINWAG_ADMIN_ADDR") or config.get("admin")
                      or DEFAULT_ADMIN)
        self.drain = float(flag(args, "--drain-delay") or env.get("CHINWAG_DRAIN_DELAY") or 0)
        self.log_format = flag(args, "--log-format") or env.get("CHINWAG_LOG_FORMAT") or "text"

    @staticmethod
    def port(addr):
        return int(addr.rsplit(":", 1)[1])

    @staticmethod
    def host(addr):
        return addr.rsplit(":", 1)[0]


# --- Kubernetes -----------------------------------------------------------------


def load_manifests():
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.relative_to(ROOT), doc))
    return docs


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_port(container, port):
    """A probe's or Service's port (a number or a name) as a number."""
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def plain_env(container, where):
    """The container's environment, as the check runs it: values as they are, a
    Secret's value made up, a field reference a stand-in."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        elif "secretKeyRef" in e.get("valueFrom", {}):
            env[e["name"]] = base64.b64encode(os.urandom(32)).decode()
        elif "fieldRef" in e.get("valueFrom", {}):
            env[e["name"]] = "check-" + e["valueFrom"]["fieldRef"]["fieldPath"].replace(".", "-")
        else:
            fail(where, f"env {e['name']}: check.py cannot stand in for {e.get('valueFrom')}")
    if container.get("envFrom"):
        fail(where, "envFrom: check.py cannot know those variables; list them under env")
    # Kubernetes expands $(VAR) in args from the container's env.
    return env


def redis_bus(bus):
    """The Redis a `redis://host:port` bus names, as "host:port" with the host's first
    label (a Service "chinwag-redis.default.svc" is "chinwag-redis"); None for another
    bus (in-process)."""
    m = re.match(r"redis://([^:/@]+)(?::(\d+))?", bus or "")
    return f"{m.group(1).split('.')[0]}:{m.group(2) or 6379}" if m else None


def expand(args, env):
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


class Pod:
    """A chinwag container of a Deployment, with what the check needs to run it."""

    def __init__(self, where, deployment, container, image, configmaps):
        self.where = where
        self.deployment = deployment
        self.spec = deployment["spec"]["template"]["spec"]
        self.container = container
        self.env = plain_env(container, where)
        if container.get("command"):
            self.argv = expand(container["command"] + container.get("args", []), self.env)
        else:
            self.argv = image.entrypoint + expand(container.get("args", image.cmd), self.env)
        self.workdir = container.get("workingDir", image.workdir)
        # The volumes a ConfigMap fills: mount path -> {file: text}.
        self.mounts = {}
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "configMap" in volume:
                data = configmaps.get(volume["configMap"]["name"])
                if data is None:
                    fail(where, f"volume {mount['name']}: no ConfigMap {volume['configMap']['name']} in deploy/kubernetes/")
                    continue
                files = dict(data)
                if volume["configMap"].get("items"):
                    files = {i["path"]: data[i["key"]] for i in volume["configMap"]["items"]}
                if mount.get("subPath"):
                    self.mounts[mount["mountPath"]] = {"": files[mount["subPath"]]}
                else:
                    self.mounts[mount["mountPath"]] = files
        self.image = image

    def settings(self):
        return Settings(self.argv[1:], self.env, lambda path: read_in_container(path, self.image, self.mounts),
                        self.workdir)


def read_in_container(path, image, mounts=None):
    """The text of a file as a container sees it: from a ConfigMap volume, else the image."""
    for mount, files in (mounts or {}).items():
        if "" in files and path == mount:
            return files[""]
        if path.startswith(mount.rstrip("/") + "/"):
            return files.get(path[len(mount.rstrip("/")) + 1:])
    for dest, src in image.files:
        if dest.endswith("/") and path.startswith(dest) and src.is_dir():
            candidate = src / path[len(dest):]
            return candidate.read_text() if candidate.is_file() else None
        if path == dest and src.is_file():
            return src.read_text()
    return None


def check_kubernetes(image):
    docs = load_manifests()
    kinds = {}
    for path, doc in docs:
        kinds.setdefault(doc["kind"], []).append((path, doc))
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for _, d in kinds.get("ConfigMap", [])}
    services = {d["metadata"]["name"]: (p, d) for p, d in kinds.get("Service", [])}
    deployments = kinds.get("Deployment", [])
    pods = []

    # Every Deployment: the security context the kit promises.
    for path, dep in deployments:
        name = dep["metadata"]["name"]
        where = f"{path} deployment/{name}"
        spec = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"].get("labels", {})
        check(selects(dep["spec"]["selector"].get("matchLabels"), labels), where, "its selector matches its pods")
        psc = spec.get("securityContext", {})
        check(psc.get("runAsNonRoot") is True, where, "runAsNonRoot")
        check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where, "seccompProfile RuntimeDefault")
        check(spec.get("enableServiceLinks") is False, where,
              "enableServiceLinks: false (Service variables would land in CHINWAG_*)")
        for c in spec["containers"]:
            csc = c.get("securityContext", {})
            cw = f"{where} container {c['name']}"
            check(csc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation: false")
            check(csc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem: true")
            check(csc.get("capabilities", {}).get("drop") == ["ALL"], cw, "drops ALL capabilities")
            res = c.get("resources", {})
            check(res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory")
                  and res.get("limits", {}).get("memory"), cw, "CPU and memory requests, a memory limit")
            check(c.get("readinessProbe") and c.get("livenessProbe"), cw, "readiness and liveness probes")
            if c["image"].split(":")[0].split("/")[-1] == "chinwag":
                pods.append(Pod(cw, dep, c, image, configmaps))
    check({p.settings().kind for p in pods} >= {"chat", "gateway"},
          "deploy/kubernetes", "a chat Deployment and a gateway Deployment run the chinwag image")

    # The Redis Services, as "name:port": the buses the chat's and the gateway's pods
    # may name, and the addresses the live run gives its local redis-server.
    redis_hosts = set()
    for name, (path, svc) in services.items():
        for _, dep in deployments:
            labels = dep["spec"]["template"]["metadata"].get("labels", {})
            if selects(svc["spec"].get("selector"), labels):
                if any(c["image"].split(":")[0].split("/")[-1] == "redis" for c in dep["spec"]["template"]["spec"]["containers"]):
                    redis_hosts |= {f"{name}:{sp['port']}" for sp in svc["spec"].get("ports", [])}

    for pod in pods:
        s = pod.settings()
        where, c, spec = pod.where, pod.container, pod.spec
        if s.kind == "gateway" and s.config is None:
            fail(where, f"the gateway's config {s.config_path} is in no ConfigMap volume nor in the image")
            continue
        # The admin listener: where the args/env/config put it, reachable by the kubelet.
        check(Settings.host(s.admin) in ("0.0.0.0", "[::]"), where,
              f"admin listener on every interface, for the kubelet's probes ({s.admin})")
        admin, public = Settings.port(s.admin), Settings.port(s.public)
        check(admin != public, where, f"admin port {admin} is not the public port {public}")
        check(Settings.host(s.public) in ("0.0.0.0", "[::]"), where, f"public port on every interface ({s.public})")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        check(public in ports.values(), where, f"declares its public port {public} ({ports})")
        check(admin in ports.values(), where, f"declares its admin port {admin} ({ports})")
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
            get = c.get(probe, {}).get("httpGet", {})
            port = container_port(c, get.get("port"))
            check(get.get("path") == path and port == admin and get.get("scheme", "HTTP") == "HTTP", where,
                  f"{probe} is GET {path} on the admin port {admin} (is {get.get('path')} on {get.get('port')} = {port})")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        check(grace > s.drain + CLOSE_TIMEOUT + MARGIN, where,
              f"terminationGracePeriodSeconds {grace} > drain delay {s.drain:g} + close timeout {CLOSE_TIMEOUT} + margin {MARGIN}")
        check(s.drain > 0, where, f"a drain delay for the endpoints' removal to propagate ({s.drain:g} s)")
        annotations = pod.deployment["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in annotations:
            check(str(annotations["prometheus.io/port"]) == str(admin) and annotations.get("prometheus.io/path") == "/metrics",
                  where, "prometheus.io annotations point at /metrics on the admin port")
        # Services and Ingress reach the public port only.
        labels = pod.deployment["spec"]["template"]["metadata"].get("labels", {})
        pod_services = [n for n, (_, svc) in services.items() if selects(svc["spec"].get("selector"), labels)]
        check(pod_services, where, f"a Service selects it ({', '.join(pod_services) or 'none'})")
        for n in pod_services:
            for sp in services[n][1]["spec"]["ports"]:
                target = container_port(c, sp.get("targetPort", sp["port"]))
                check(target == public, f"service/{n}", f"port {sp['port']} goes to the public port {public} (goes to {target})")
        if s.kind == "gateway":
            cfg = s.config
            check("admin" in cfg, where, f"{s.config_path} sets gateway.admin")
            check("trusted_proxies" in cfg.get("limits", {}), where, f"{s.config_path} sets gateway.limits.trusted_proxies")
            secret_env = cfg.get("auth", {}).get("jwt", {}).get("secret_env")
            if secret_env:
                entry = next((e for e in c.get("env", []) if e["name"] == secret_env), {})
                check("secretKeyRef" in entry.get("valueFrom", {}), where,
                      f"{secret_env} (gateway.auth.jwt.secret_env) comes from a Secret (secretKeyRef)")
        else:
            check("CHINWAG_TRUSTED_PROXY" in pod.env or flag(pod.argv, "--trusted-proxy"), where,
                  "trusts the ingress controller's X-Forwarded-For (CHINWAG_TRUSTED_PROXY)")
            # Chat replicas on the in-process bus would each be a chat of their own.
            replicas = pod.deployment["spec"].get("replicas", 1)
            check(redis_bus(s.bus) or replicas == 1, where,
                  f"{replicas} replicas share one chat (bus {s.bus}: several need a Redis bus)")
        if redis_bus(s.bus):
            check(redis_bus(s.bus) in redis_hosts, where,
                  f"the bus {s.bus} is a Redis Service of deploy/kubernetes/ ({', '.join(sorted(redis_hosts)) or 'none'})")

    # The PodDisruptionBudgets and the Ingress.
    for path, pdb in kinds.get("PodDisruptionBudget", []):
        sel = pdb["spec"].get("selector", {}).get("matchLabels")
        matched = [d["metadata"]["name"] for _, d in deployments
                   if selects(sel, d["spec"]["template"]["metadata"].get("labels", {}))]
        where = f"{path} pdb/{pdb['metadata']['name']}"
        check(matched, where, f"selects a Deployment ({', '.join(matched) or 'none'})")
        # It must let `kubectl drain` evict a pod, or a drain waits forever (a
        # percentage is not checked).
        budget = pdb["spec"]
        for _, d in deployments:
            if d["metadata"]["name"] not in matched:
                continue
            replicas = d["spec"].get("replicas", 1)
            allowed = None
            if isinstance(budget.get("minAvailable"), int):
                allowed = replicas - budget["minAvailable"]
            elif isinstance(budget.get("maxUnavailable"), int):
                allowed = budget["maxUnavailable"]
            check(allowed is None or allowed >= 1, where,
                  f"allows a voluntary disruption of deployment/{d['metadata']['name']} ({replicas} replicas, "
                  f"{', '.join(f'{k} {v}' for k, v in budget.items() if k != 'selector')})")
    pdb_selected = {d["metadata"]["name"] for _, d in deployments for _, pdb in kinds.get("PodDisruptionBudget", [])
                    if selects(pdb["spec"].get("selector", {}).get("matchLabels"), d["spec"]["template"]["metadata"].get("labels", {}))}
    for pod in pods:
        check(pod.deployment["metadata"]["name"] in pdb_selected, pod.where, "a PodDisruptionBudget covers it")
    ingresses = kinds.get("Ingress", [])
    check(ingresses, "deploy/kubernetes", "an Ingress")
    for path, ing in ingresses:
        where = f"{path} ingress/{ing['metadata']['name']}"
        ann = ing["metadata"].get("annotations", {})
        for key in ("nginx.ingress.kubernetes.io/proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout"):
            value = ann.get(key)
            check(value is not None and str(value).isdigit() and int(value) > KEEPALIVE, where,
                  f"{key} ({value}) is above the {KEEPALIVE} s keepalive interval")
        for rule in ing["spec"].get("rules", []):
            for p in rule.get("http", {}).get("paths", []):
                backend = p["backend"]["service"]
                name = backend["name"]
                if not check(name in services, where, f"backend service/{name} exists"):
                    continue
                sp = next((x for x in services[name][1]["spec"]["ports"]
                           if x.get("name") == backend["port"].get("name") or x["port"] == backend["port"].get("number")), None)
                check(sp is not None, where, f"backend service/{name} has port {backend['port']}")
    return pods, redis_hosts


# --- compose --------------------------------------------------------------------


def compose_config():
    """The compose file as docker-compose resolves it (anchors, merges, defaults)."""
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], capture_output=True, text=True)
    if out.returncode != 0:
        fail("deploy/compose.yaml", f"docker-compose config failed: {out.stderr.strip()}")
        return {}
    return yaml.safe_load(out.stdout)


def published(service):
    """{container port: (host ip, host port)} of a compose service."""
    result = {}
    for p in service.get("ports", []):
        if isinstance(p, dict):
            result[int(p["target"])] = (p.get("host_ip", "0.0.0.0"), int(p["published"]))
            continue
        spec = str(p).split("/")[0].split(":")
        if len(spec) == 3:
            result[int(spec[2])] = (spec[0], int(spec[1]))
        elif len(spec) == 2:
            result[int(spec[1])] = ("0.0.0.0", int(spec[0]))
    return result


def seconds(duration):
    m = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(duration))
    return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)


def check_compose(images):
    config = compose_config()
    services = config.get("services", {})
    roles = {}
    host_ports = {}
    for name, svc in services.items():
        where = f"deploy/compose.yaml service {name}"
        dockerfile = (svc.get("build") or {}).get("dockerfile")
        if dockerfile:
            image = images.get(dockerfile)
            if not check(image is not None, where, f"built from a Dockerfile the check knows ({dockerfile})"):
                continue
            roles[name] = (image, svc)
        elif svc.get("image", "").split(":")[0] == "redis":
            roles[name] = ("redis", svc)
        else:
            fail(where, f"check.py does not know how to run the image {svc.get('image')}")
        for container, (ip, port) in published(svc).items():
            check(port not in host_ports, where, f"host port {port} is its own (not also {host_ports.get(port)}'s)")
            host_ports[port] = name
    nodes = {"gateway": 0, "chat": 0}
    for name, (image, svc) in roles.items():
        if image == "redis" or image.entrypoint != ["/usr/local/bin/chinwag"]:
            continue
        where = f"deploy/compose.yaml service {name}"
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        args = svc.get("command", image.cmd)
        args = shlex.split(args) if isinstance(args, str) else args
        s = Settings(args, env, lambda path, image=image: read_in_container(path, image),
                     svc.get("working_dir", image.workdir))
        if s.kind == "gateway" and s.config is None:
            fail(where, f"the gateway's config {s.config_path} is not in the image")
            continue
        ports = published(svc)
        for what, addr in (("public", s.public), ("admin", s.admin)):
            check(Settings.host(addr) in ("0.0.0.0", "[::]") and Settings.port(addr) in ports, where,
                  f"its {what} address {addr} listens on every interface and is published ({ports})")
        development = s.kind == "gateway" and (s.config.get("auth") or {}).get("development_usernames")
        if development:
            check(all(ip == "127.0.0.1" for ip, _ in ports.values()), where,
                  "development usernames: published on 127.0.0.1 only")
        grace = seconds(svc.get("stop_grace_period", "10s"))
        check(grace > s.drain + CLOSE_TIMEOUT, where,
              f"stop_grace_period {grace:g} s > drain delay {s.drain:g} + close timeout {CLOSE_TIMEOUT}")
        # Every gateway node, and every chat node on Redis, on the compose Redis: the
        # chat's nodes on the in-process bus would each be a chat of their own.
        bus = redis_bus(s.bus)
        if s.kind == "gateway" or bus:
            host, _, port = (bus or "").partition(":")
            on_redis = roles.get(host, (None,))[0] == "redis" and port == "6379"
            check(on_redis, where, f"its bus {s.bus} is the compose Redis")
            nodes[s.kind] = nodes.get(s.kind, 0) + on_redis
    for kind, count in nodes.items():
        check(count >= 2, "deploy/compose.yaml", f"two {kind} nodes or more on the compose Redis ({count})")
    return roles


# --- the dashboard --------------------------------------------------------------


def dashboard_metrics():
    """The metric names the dashboard's queries use (panels and template variables)."""
    board = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    exprs.append(value)
                elif key == "query" and isinstance(value, (str, dict)):
                    exprs.append(value if isinstance(value, str) else value.get("query", ""))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(board)
    names = set()
    for expr in exprs:
        names |= set(re.findall(r"\b((?:chinwag|process)_[a-z0-9_]+)", expr))
    return board, names


def base_name(name):
    return re.sub(r"_(bucket|sum|count)$", "", name)


def check_dashboard():
    where = "deploy/grafana/chinwag.json"
    try:
        board, names = dashboard_metrics()
    except (OSError, ValueError) as e:
        fail(where, f"not readable JSON: {e}")
        return set()
    unknown = {n for n in names if n not in SPEC_METRICS and base_name(n) not in SPEC_METRICS}
    check(not unknown, where, f"queries only exported metrics (unknown: {', '.join(sorted(unknown)) or 'none'})")
    unused = SPEC_METRICS - {base_name(n) for n in names} - names
    check(not unused, where, f"queries every exported metric (unused: {', '.join(sorted(unused)) or 'none'})")
    check(any("histogram_quantile" in json.dumps(p) for p in board.get("panels", [])), where,
          "broadcast latency as histogram_quantile")
    datasources = {json.dumps(p.get("datasource")) for p in board.get("panels", []) if p.get("type") != "row"}
    check(datasources == {json.dumps({"type": "prometheus", "uid": "${datasource}"})}, where,
          "every panel queries the ${datasource} variable")
    return names


# --- running the binary ---------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sandbox:
    """A container's stand-in: its root folder (the image's files, its volumes),
    its addresses mapped to free loopback ports, its hosts to local services."""

    def __init__(self, work, label, image, mounts, hosts):
        self.root = Path(tempfile.mkdtemp(prefix=re.sub(r"\W+", "-", label) + "-", dir=work))
        self.ports = {}
        self.hosts = hosts  # "name:port" -> "127.0.0.1:port"
        image.make_root(self.root)
        for mount, files in mounts.items():
            target = self.root / mount.lstrip("/")
            if "" in files:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(self.translate(files[""]))
                continue
            # A ConfigMap volume replaces the folder it is mounted on.
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for name, text in files.items():
                (target / name).write_text(self.translate(text))
        # Everyone may read and run, nobody but root may write.
        for path in [self.root, *self.root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)

    def local(self, addr):
        """The loopback address standing for a container's listening address."""
        port = Settings.port(addr)
        if port not in self.ports:
            self.ports[port] = free_port()
        return f"127.0.0.1:{self.ports[port]}"

    def translate(self, text):
        text = re.sub(r"(?:0\.0\.0\.0|\[::\]):(\d+)", lambda m: self.local(m.group(0)), text)

        def host(m):
            name = f"{m.group(1).split('.')[0]}:{m.group(2)}"
            return f"{m.group(0).split('//')[0]}//{self.hosts.get(name, m.group(1) + ':' + m.group(2))}"

        return re.sub(r"redis://([A-Za-z0-9.-]+):(\d+)", host, text)

    def path(self, value):
        """An absolute path inside the container, as a path under the root."""
        if value.startswith("/") and (self.root / value.lstrip("/").split("/")[0]).exists():
            return str(self.root / value.lstrip("/"))
        return value

    def argv(self, argv):
        return [self.path(self.translate(a)) for a in argv]

    def env(self, env):
        return {k: self.path(self.translate(v)) for k, v in env.items()}


PROCESSES = []


def start(label, argv, env, cwd, work, unprivileged=True):
    log = Path(work) / (re.sub(r"\W+", "-", label) + ".log")
    prefix = []
    if unprivileged and os.geteuid() == 0:
        prefix = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "--no-new-privs", "--"]
    full_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **env}
    print(f"  run  {label}: {shlex.join(argv)}" + (f"  [env {' '.join(f'{k}={v}' for k, v in env.items() if 'SECRET' not in k)}]" if env else ""), flush=True)
    out = open(log, "w")
    proc = subprocess.Popen(prefix + argv, env=full_env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.label, proc.log = label, log
    PROCESSES.append(proc)
    return proc


def start_client(user, argv, work):
    """`chinwag client`, its standard input kept open (a pipe) until the end."""
    log = Path(work) / f"client-{user}.log"
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    proc.label, proc.log = f"client {user}", log
    PROCESSES.append(proc)
    return proc


def stop_all():
    for proc in PROCESSES:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def log_tail(proc, lines=30):
    try:
        text = proc.log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("      | " + line for line in text[-lines:])


def get(url, timeout=2.0):
    """(status, body) of a GET, or (None, the error)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as e:
        return None, str(e)


def wait_for(what, predicate, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        if predicate():
            return True
        time.sleep(0.05)
    return False


def can_connect(addr):
    host, port = addr.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def check_live_server(label, proc, settings, sandbox, grace, shutdown=True):
    """The admin listener and the shutdown of a running chinwag."""
    where = f"live {label}"
    admin = sandbox.local(settings.admin) if Settings.host(settings.admin) in ("0.0.0.0", "[::]") else settings.admin
    public = sandbox.local(settings.public) if Settings.host(settings.public) in ("0.0.0.0", "[::]") else settings.public
    base = f"http://{admin}"
    if not wait_for("health", lambda: get(base + "/health")[0] == 200, 15, proc):
        status, body = get(base + "/health")
        state = f"exited with {proc.returncode}" if proc.poll() is not None else "still running"
        lines = [l for l in proc.log.read_text(errors="replace").splitlines() if l.strip()]
        cause = next((l for l in lines if re.search(r"error|^chinwag:", l, re.I)), lines[-1] if lines else "no output")
        fail(where, f"GET /health on the admin port {admin} never answered 200 (last: {status} {body.strip()[:100]}); "
                    f"the process {state} ({cause.strip()[:300]}); its output:\n{log_tail(proc)}")
        return False
    ok(where, f"GET /health 200 on the admin port ({admin})")
    if os.geteuid() == 0:
        uid = process_uid(proc.pid)
        check(uid == 65534, where, f"runs as uid 65534, not root (uid {uid})")
    ready = wait_for("ready", lambda: get(base + "/ready")[0] == 200, 10, proc)
    status, body = get(base + "/ready")
    check(ready, where, f"GET /ready 200 ({status} {body.strip()[:200]})")
    if redis_bus(settings.bus):
        check("redis" in body.lower(), where, f"GET /ready tells the Redis bus's state ({body.strip()[:200]})")
    check(can_connect(public), where, f"the public port accepts connections ({public})")
    status, metrics = get(base + "/metrics")
    if check(status == 200, where, f"GET /metrics 200 ({status})"):
        _, wanted = dashboard_metrics()
        wanted = sorted(n for n in wanted if applies(base_name(n), settings.kind))
        missing = [n for n in wanted if not has_metric(metrics, n)]
        check(not missing, where, f"/metrics has the {len(wanted)} metrics of the dashboard that apply to the "
                                  f"{settings.kind} (missing: {', '.join(missing) or 'none'})")
    if settings.log_format == "json":
        lines = [l for l in proc.log.read_text(errors="replace").splitlines() if l.strip()]
        bad = [l for l in lines if not is_json(l)]
        check(lines and not bad, where, f"log lines are JSON ({len(lines)} lines; first other: {bad[:1]})")
    if not shutdown:
        return True
    # SIGTERM: /ready 503 at once, serving on for the drain delay, exit 0 in time.
    start_time = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    if settings.drain > 0:
        turned = wait_for("503", lambda: get(base + "/ready", 0.5)[0] == 503, 1.0)
        check(turned, where, f"GET /ready 503 within 1 s of SIGTERM ({get(base + '/ready', 0.5)})")
        status, body = get(base + "/health", 0.5)
        check(status == 200, where, f"GET /health still 200 while draining ({status})")
        check(can_connect(public), where, "the public port still accepts connections while draining")
    try:
        code = proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        fail(where, f"still running {grace} s (the grace period) after SIGTERM; its output:\n{log_tail(proc)}")
        return False
    elapsed = time.monotonic() - start_time
    check(code == 0, where, f"exit status 0 after SIGTERM ({code})" + ("" if code == 0 else f"\n{log_tail(proc)}"))
    check(settings.drain - 0.5 <= elapsed <= settings.drain + CLOSE_TIMEOUT + 1, where,
          f"exited {elapsed:.1f} s after SIGTERM (drain delay {settings.drain:g} s, close timeout {CLOSE_TIMEOUT} s)")
    return True


def process_uid(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def has_metric(text, name):
    base = base_name(re.sub(r"_total$", "", name))
    for line in text.splitlines():
        if re.match(rf"{re.escape(name)}(\{{| )", line):
            return True
        m = re.match(r"# (?:TYPE|HELP) (\S+)", line)
        if m and m.group(1) in (name, base_name(name), base):
            return True
    return False


def is_json(line):
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def start_redis(work):
    port = free_port()
    proc = start("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no"], {}, work, work, unprivileged=False)
    if not wait_for("redis", lambda: can_connect(f"127.0.0.1:{port}"), 10, proc):
        raise SystemExit(f"FAIL: redis-server did not start:\n{log_tail(proc)}")
    return f"127.0.0.1:{port}"


def run_pod(pod, work, hosts):
    s = pod.settings()
    sandbox = Sandbox(work, pod.where, pod.image, pod.mounts, hosts)
    argv, env = sandbox.argv(pod.argv), sandbox.env(pod.env)
    cwd = sandbox.root / pod.workdir.lstrip("/")
    proc = start(pod.where, argv, env, cwd, work)
    grace = pod.spec.get("terminationGracePeriodSeconds", 30)
    check_live_server(pod.where, proc, s, sandbox, grace)


def run_compose(roles, work, python, binary):
    hosts = {}
    for name, (image, svc) in roles.items():
        if image == "redis":
            hosts[f"{name}:6379"] = start_redis(work)
    nodes, others = [], []
    for name, (image, svc) in roles.items():
        if image == "redis":
            continue
        label = f"compose {name}"
        env = {k: str(v) for k, v in (svc.get("environment") or {}).items()}
        args = svc.get("command", image.cmd)
        args = shlex.split(args) if isinstance(args, str) else args
        entrypoint = svc.get("entrypoint", image.entrypoint)
        sandbox = Sandbox(work, label, image, {}, hosts)
        workdir = svc.get("working_dir", image.workdir)
        cwd = sandbox.root / workdir.lstrip("/")
        if entrypoint == ["/usr/local/bin/chinwag"]:
            s = Settings(args, env, lambda path, image=image: read_in_container(path, image), workdir)
            proc = start(label, sandbox.argv(entrypoint + args), sandbox.env(env), cwd, work)
            nodes.append((label, proc, s, sandbox, seconds(svc.get("stop_grace_period", "10s"))))
        elif entrypoint[:1] == ["python3"]:
            # The handler's image: its python3 is the test venv's (which has redis).
            argv = [python] + sandbox.argv(entrypoint[1:] + args)
            others.append((label, start(label, argv, sandbox.env(env), cwd, work, unprivileged=False)))
        else:
            fail(label, f"check.py does not know how to run {entrypoint}")
    for label, proc, s, sandbox, grace in nodes:
        check_live_server(label, proc, s, sandbox, grace, shutdown=False)
    for label, proc in others:
        ready = wait_for("handler", lambda: "ready" in proc.log.read_text(errors="replace"), 15, proc)
        check(ready, f"live {label}", "the handler is subscribed (prints ready)" + ("" if ready else f"\n{log_tail(proc)}"))
    # The README's example through compose's services: bob on node 2 tells alex on node 1.
    gateways = [node for node in nodes if node[2].kind == "gateway"]
    if len(gateways) >= 2 and others:
        node1, node2 = gateways[0], gateways[1]
        url = lambda node, user: f"ws://{node[3].local(node[2].public)}{node[2].config.get('socket', {}).get('path', '/connect')}?namespace=acme&username={user}"
        alex = start_client("alex", [binary, "client", url(node1, "alex")], work)
        bob = start_client("bob", [binary, "client", url(node2, "bob")], work)
        hello = all(wait_for("hello", lambda c=c, u=u: f'"hello":"{u}"' in c.log.read_text(errors="replace"), 10, c)
                    for c, u in ((alex, "alex"), (bob, "bob")))
        if check(hello, "live compose", f"alex on {node1[0]} and bob on {node2[0]} got the handler's hello"
                 + ("" if hello else f"\n{log_tail(alex)}\n{log_tail(bob)}")):
            bob.stdin.write('{"type":"tell","payload":{"to":"alex","text":"hi"}}\n')
            bob.stdin.flush()
            told = wait_for("told", lambda: '"from":"bob"' in alex.log.read_text(errors="replace"), 10)
            check(told, "live compose", f"bob's message on {node2[0]} reached alex on {node1[0]} through Redis"
                  + ("" if told else f"\n{log_tail(alex)}"))
    chats = [node for node in nodes if node[2].kind == "chat" and redis_bus(node[2].bus)]
    if len(chats) >= 2:
        check_compose_chat(chats[0], chats[1], work, binary)
    for label, proc, s, sandbox, grace in nodes:
        where = f"live {label}"
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=grace)
            check(code == 0, where, f"exit status 0 after SIGTERM ({code})")
        except subprocess.TimeoutExpired:
            fail(where, f"still running {grace:g} s (stop_grace_period) after SIGTERM")


def check_compose_chat(node1, node2, work, binary):
    """One chat on two nodes: alice on node 1 sees bob on node 2 join and reads his
    line; her name is taken on node 2 too (409, at the page's pre-check and at the
    handshake)."""
    (label1, _, s1, sandbox1, _), (label2, _, s2, sandbox2, _) = node1, node2
    public1, public2 = sandbox1.local(s1.public), sandbox2.local(s2.public)
    log = lambda client: client.log.read_text(errors="replace")
    alice = start_client("alice", [binary, "client", f"ws://{public1}/chat/alice"], work)
    joined = wait_for("alice", lambda: "alice connected to chat" in log(alice), 10, alice)
    if not check(joined, "live compose", f"alice joined the chat on {label1}"
                 + ("" if joined else f"\n{log_tail(alice)}")):
        return
    bob = start_client("bob", [binary, "client", f"ws://{public2}/chat/bob"], work)
    joined = wait_for("bob", lambda: "bob connected to chat" in log(alice), 10, alice)
    if not check(joined, "live compose", f"alice on {label1} saw bob join on {label2}"
                 + ("" if joined else f"\n{log_tail(alice)}\n{log_tail(bob)}")):
        return
    line = f"hello from {label2}"
    bob.stdin.write(line + "\n")
    bob.stdin.flush()
    got = wait_for("line", lambda: f"bob: {line}" in log(alice), 10, alice)
    check(got, "live compose", f"bob's line on {label2} reached alice on {label1} through Redis (bob: {line})"
          + ("" if got else f"\n{log_tail(alice)}\n{log_tail(bob)}"))
    status, body = get(f"http://{public2}/chat/alice")
    free, _ = get(f"http://{public2}/chat/carol")
    check(status == 409 and free == 200, "live compose",
          f"GET /chat/alice on {label2}: 409, the name is taken on {label1} ({status} {body.strip()[:100]}; "
          f"a free name: {free})")
    try:
        second = subprocess.run([binary, "client", f"ws://{public2}/chat/alice"], stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=10)
        refused = second.returncode != 0 and "409" in second.stdout + second.stderr
        output = (second.stdout + second.stderr).strip()[:200]
    except subprocess.TimeoutExpired:
        refused, output = False, "still connected after 10 s"
    check(refused, "live compose", f"a second alice on {label2} is refused with 409 ({output})")


def main():
    parser = argparse.ArgumentParser(description="Checks the deployment kit in deploy/.")
    parser.add_argument("--binary", required=True, help="the chinwag binary to run")
    parser.add_argument("--python", default=sys.executable, help="a python with the redis package, for the handler")
    parser.add_argument("--static", action="store_true", help="only the static checks")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every check that passes too")
    args = parser.parse_args()
    VERBOSE[0] = args.verbose
    binary = str(Path(args.binary).resolve())
    # A Ctrl-C or a SIGTERM still stops everything started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print("static: Dockerfile, Kubernetes manifests, compose file, dashboard", flush=True)
    image = Image(DOCKERFILE, binary)
    check_dockerfile(image)
    check_build_context()
    images = {"deploy/Dockerfile": image, "deploy/handler.Dockerfile": Image(DEPLOY / "handler.Dockerfile", binary)}
    pods, redis_hosts = check_kubernetes(image)
    roles = check_compose(images)
    check_dashboard()

    if not args.static:
        work = tempfile.mkdtemp(prefix="chinwag-deploy-check-")
        os.chmod(work, 0o755)
        try:
            print("live: the binary as each container runs it (unprivileged, loopback ports)", flush=True)
            help_text = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
            if "--admin-addr" not in help_text:
                print("  NOTE: this chinwag has no --admin-addr: its admin listener (/health, /ready, /metrics)\n"
                      "  has not landed, so the live checks below fail until it does.", flush=True)
            redis = start_redis(work) if redis_hosts else None
            hosts = {h: redis for h in redis_hosts}
            for pod in pods:
                run_pod(pod, work, hosts)
            # The image as `docker run chinwag` starts it: its ENTRYPOINT and CMD, no env.
            settings = Settings(image.cmd, {}, lambda p: None, image.workdir)
            sandbox = Sandbox(work, "image default", image, {}, {})
            proc = start("image default CMD", sandbox.argv(image.entrypoint + image.cmd), {},
                         sandbox.root / image.workdir.lstrip("/"), work)
            check_live_server("image default CMD", proc, settings, sandbox, 10)
            # Absolute, not resolved: a venv's python is a link that must keep its path.
            run_compose(roles, work, os.path.abspath(args.python), binary)
        finally:
            stop_all()
            shutil.rmtree(work, ignore_errors=True)

    print(f"{PASSED[0]} checks passed, {len(FAILURES)} failed", flush=True)
    if FAILURES:
        print(f"\nFAIL: the deployment kit has {len(FAILURES)} problem(s):", flush=True)
        for f in FAILURES:
            print(f"  - {f.splitlines()[0]}")
        return 1
    print("\nthe deployment kit checks out" + (" (static checks only)" if args.static else ""))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
