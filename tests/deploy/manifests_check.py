"""Cross-checks of the Kubernetes manifests that schema validation cannot see.

Used two ways:
  * by tests/deploy/test_manifests.py on deploy/base as written (plain `make test`), and
  * by deploy/check-deploy.sh on each overlay as `kubectl kustomize` renders it:
        python -m tests.deploy.manifests_check rendered.yaml [--sidecar native|classic]

It also checks the one CRD kind used (PodMonitor, monitoring.coreos.com/v1), which
kubernetes-validate has no schema for: known fields only, and its selector and port must
meet the Deployment's pod.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

PROXY_PORT_NAME = "gateway-http"
ADMIN_PORT_NAME = "gateway-admin"
HS_ENV_FOR_CHECK = "x" * 64  # a stand-in secret, only so `gateway check` can resolve {env: ...}

PODMONITOR_SPEC_FIELDS = {
    "selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "attachMetadata", "scrapeProtocols", "scrapeClass", "bodySizeLimit",
}
PODMONITOR_ENDPOINT_FIELDS = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
    "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "followRedirects",
    "enableHttp2", "filterRunning", "tlsConfig", "basicAuth", "bearerTokenSecret", "authorization",
    "oauth2", "proxyUrl", "trackTimestampsStaleness",
}


def load_docs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _duration_seconds(config_text: str) -> float:
    """server.shutdown_grace of a gateway config, parsed by the gateway itself."""
    from gateway.config.load import load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(config_text)
        cfg = load_config(str(path))
    return float(cfg.server.shutdown_grace)


def check_gateway_config(config_text: str, env_names: set[str]) -> list[str]:
    from gateway.config.load import ConfigInvalid, load_config

    errors: list[str] = []
    with _env(env_names), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.yaml"
        path.write_text(config_text)
        try:
            cfg = load_config(str(path))
        except ConfigInvalid as exc:
            return [f"ConfigMap gateway.yaml: {issue}" for issue in exc.issues]
    if cfg.server.listen.port != 8080:
        errors.append("gateway listen port is not 8080 (the container port gateway-http)")
    if cfg.server.admin_listen.port != 9901:
        errors.append("gateway admin port is not 9901 (the container port gateway-admin)")
    if cfg.server.admin_listen.host.strip("[]") in ("127.0.0.1", "::1", "localhost"):
        errors.append("admin_listen is loopback: kubelet probes and Prometheus reach the pod IP")
    if "127.0.0.1" not in str(cfg.upstream.url) and "localhost" not in str(cfg.upstream.url):
        errors.append(f"upstream {cfg.upstream.url} is not the app on loopback")
    return errors


def check(docs: list[dict[str, Any]], sidecar: str, config_text: str | None = None) -> list[str]:
    errors: list[str] = []
    deploy = _one(docs, "Deployment")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    pod = deploy["spec"]["template"]["spec"]
    annotations = deploy["spec"]["template"]["metadata"].get("annotations", {})

    def matches(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    inits = pod.get("initContainers", [])
    containers = pod.get("containers", [])
    gateways = [c for c in inits + containers if c["name"] == "gateway"]
    if len(gateways) != 1:
        return [*errors, f"expected one container named gateway, found {len(gateways)}"]
    gw = gateways[0]
    if sidecar == "native":
        if gw not in inits or gw.get("restartPolicy") != "Always":
            errors.append("native sidecar: gateway must be an initContainer with restartPolicy: Always")
    elif sidecar == "classic":
        if gw not in containers or "restartPolicy" in gw or inits:
            errors.append("classic sidecar: gateway must be a regular container, no initContainers")
    app = [c for c in containers if c["name"] != "gateway"]
    if not app:
        errors.append("no app container")

    # Ports: only the gateway has any; names the Service, NetworkPolicy, PodMonitor use.
    ports = {p["name"]: p["containerPort"] for p in gw.get("ports", [])}
    if ports != {PROXY_PORT_NAME: 8080, ADMIN_PORT_NAME: 9901}:
        errors.append(f"gateway ports {ports}")
    for c in app:
        if c.get("ports"):
            errors.append(f"app container {c['name']} exposes ports: it must listen on 127.0.0.1 only")
        if "127.0.0.1" not in " ".join(map(str, c.get("command", []) + c.get("args", []))):
            errors.append(f"app container {c['name']} is not told to listen on 127.0.0.1")

    # Probes on the admin endpoints.
    want = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/readyz"}
    for probe, path in want.items():
        get = gw.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") not in (ADMIN_PORT_NAME, 9901):
            errors.append(f"gateway {probe} must GET {path} on the admin port, has {get}")

    # Security: pod and every container.
    psc = pod.get("securityContext", {})
    if not psc.get("runAsNonRoot") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append("pod securityContext: runAsNonRoot and seccomp RuntimeDefault")
    for c in inits + containers:
        sc = c.get("securityContext", {})
        bad = [
            k for k, ok in {
                "runAsNonRoot": sc.get("runAsNonRoot") is True,
                "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
                "allowPrivilegeEscalation": sc.get("allowPrivilegeEscalation") is False,
                "capabilities.drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
                "seccompProfile RuntimeDefault": sc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                "resources": bool(c.get("resources", {}).get("requests")) and bool(c.get("resources", {}).get("limits")),
            }.items() if not ok
        ]
        if bad:
            errors.append(f"container {c['name']}: {', '.join(bad)}")

    # Config: the ConfigMap mounted as a directory (no subPath, or reloads never arrive).
    cm_volumes = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    env = {e["name"]: e for e in gw.get("env", [])}
    config_path = env.get("GATEWAY_CONFIG", {}).get("value", "/etc/gateway/gateway.yaml")
    mounts = [m for m in gw.get("volumeMounts", []) if m["name"] in cm_volumes]
    if len(mounts) != 1 or "subPath" in mounts[0] or not config_path.startswith(mounts[0]["mountPath"].rstrip("/") + "/"):
        errors.append("gateway config: one ConfigMap volume mounted as a directory holding $GATEWAY_CONFIG")
    configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
    if mounts:
        cm = configmaps.get(cm_volumes[mounts[0]["name"]])
        key = Path(config_path).name
        if cm is None or key not in cm.get("data", {}):
            errors.append(f"ConfigMap {cm_volumes[mounts[0]['name']]} with key {key} not in the manifests")
        elif config_text is None:
            config_text = cm["data"][key]
    secret_envs = {name for name, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
    if not secret_envs:
        errors.append("no Secret reference for the HS secret")
    for c in app:
        if any("secretKeyRef" in e.get("valueFrom", {}) for e in c.get("env", [])):
            errors.append(f"app container {c['name']} gets the gateway's secret")
    if config_text is not None:
        errors += check_gateway_config(config_text, secret_envs)
        try:
            # terminationGracePeriodSeconds must exceed shutdown_grace, or the kubelet kills the drain.
            with _env(secret_envs):
                grace = _duration_seconds(config_text)
            tgps = pod.get("terminationGracePeriodSeconds", 30)
            if not tgps > grace + 5:
                errors.append(f"terminationGracePeriodSeconds {tgps} not above shutdown_grace {grace}s (+5s preStop)")
        except Exception as exc:  # reported above by check_gateway_config
            errors.append(f"shutdown_grace unreadable: {exc!r}")

    # Service: the gateway port only.
    svc = _one(docs, "Service")
    if not matches(svc["spec"]["selector"]):
        errors.append("Service selector does not select the pod")
    targets = [p.get("targetPort") for p in svc["spec"]["ports"]]
    if targets not in ([PROXY_PORT_NAME], [8080]):
        errors.append(f"Service must target the gateway port only, targets {targets}")

    # NetworkPolicy: ingress to the gateway port; admin from the monitoring namespace only.
    np = _one(docs, "NetworkPolicy")
    if not matches(np["spec"]["podSelector"].get("matchLabels", {})) or "Ingress" not in np["spec"].get("policyTypes", []):
        errors.append("NetworkPolicy must select the pod and govern Ingress")
    for rule in np["spec"].get("ingress", []):
        rule_ports = {p.get("port") for p in rule.get("ports", [])}
        if not rule_ports:
            errors.append("NetworkPolicy rule without ports admits every port")
        if rule_ports - {PROXY_PORT_NAME, 8080, ADMIN_PORT_NAME, 9901}:
            errors.append(f"NetworkPolicy admits other ports {rule_ports}")
        if rule_ports & {ADMIN_PORT_NAME, 9901} and not rule.get("from"):
            errors.append("NetworkPolicy admits the admin port from everywhere")

    pdb = _one(docs, "PodDisruptionBudget")
    if not matches(pdb["spec"]["selector"]["matchLabels"]):
        errors.append("PodDisruptionBudget does not select the pod")

    # Scraping: annotations for plain Prometheus, a PodMonitor for the operator.
    if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != "9901" \
            or annotations.get("prometheus.io/path", "/metrics") != "/metrics":
        errors.append(f"prometheus.io annotations {annotations}")
    pm = _one(docs, "PodMonitor")
    if pm.get("apiVersion") != "monitoring.coreos.com/v1":
        errors.append("PodMonitor apiVersion")
    unknown = set(pm["spec"]) - PODMONITOR_SPEC_FIELDS
    if unknown:
        errors.append(f"PodMonitor spec: unknown fields {unknown}")
    if not matches(pm["spec"]["selector"].get("matchLabels", {})):
        errors.append("PodMonitor selector does not select the pod")
    for ep in pm["spec"]["podMetricsEndpoints"]:
        if set(ep) - PODMONITOR_ENDPOINT_FIELDS:
            errors.append(f"PodMonitor endpoint: unknown fields {set(ep) - PODMONITOR_ENDPOINT_FIELDS}")
        if ep.get("port") != ADMIN_PORT_NAME or ep.get("path", "/metrics") != "/metrics":
            errors.append(f"PodMonitor endpoint must scrape {ADMIN_PORT_NAME} /metrics: {ep}")
    return errors


class _env:
    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        self.saved = {k: os.environ.get(k) for k in self.names}
        os.environ.update({k: HS_ENV_FOR_CHECK for k in self.names})

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rendered", type=Path, help="output of kubectl kustomize")
    parser.add_argument("--sidecar", choices=["native", "classic"], required=True)
    args = parser.parse_args(argv)
    errors = check(load_docs([args.rendered]), args.sidecar)
    for e in errors:
        print(f"{args.rendered}: {e}", file=sys.stderr)
    if not errors:
        print(f"{args.rendered}: manifests cross-check ok ({args.sidecar} sidecar; PodMonitor checked)")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
