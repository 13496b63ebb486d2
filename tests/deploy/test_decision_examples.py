"""Decision-mode deploy examples: what no schema checks (CRDs, annotations, cross-references).

deploy/check-deploy.sh renders each example with `kubectl kustomize` and validates the kinds
that have schemas; this test, in plain `make test`, checks that each proxy's configuration
points at the gateway's authz port, copies exactly the claim headers the gateway sets, and
matches the gateway's dialect and path prefix, and that the plain proxy configurations the
end-to-end tests run are the ones README shows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.config.load import parse_config
from gateway.config.model import GatewayConfig

REPO = Path(__file__).resolve().parents[2]
DECISION = REPO / "deploy" / "decision"
K8S = DECISION / "k8s"
NAMESPACE = "orders"

FORWARD_AUTH_FIELDS = {
    "address", "tls", "trustForwardHeader", "authResponseHeaders", "authResponseHeadersRegex",
    "authRequestHeaders", "addAuthCookiesToResponse", "headerField", "forwardBody", "maxBodySize",
    "preserveLocationHeader", "preserveRequestMethod", "maxResponseBodySize",
}
ENVOY_EXT_AUTHZ_HTTP_FIELDS = {
    "service", "port", "timeout", "pathPrefix", "failOpen", "statusOnError", "includeRequestHeadersInCheck",
    "includeAdditionalHeadersInCheck", "includeRequestBodyInCheck", "headersToUpstreamOnAllow",
    "headersToDownstreamOnDeny", "headersToDownstreamOnAllow", "includeHeadersInCheck",
}


def docs(example: str) -> list[dict[str, Any]]:
    """The example's resources and those of the authorizer it builds on."""
    out: list[dict[str, Any]] = []
    for directory in (K8S / "authorizer", K8S / example):
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for name in kustomization["resources"]:
            if not name.startswith(".."):
                out.extend(d for d in yaml.safe_load_all((directory / name).read_text()) if d)
    return out


def one(items: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in items if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def gateway_config(example: str) -> GatewayConfig:
    path = K8S / example / "gateway.yaml"
    return parse_config(path.read_text(), source=str(path), base_dir=path.parent, environ=os.environ)


def claim_headers(config: GatewayConfig) -> set[str]:
    names = {header.lower() for _, header in config.forward.claims_to_headers}
    if config.forward.payload_header:
        names.add(config.forward.payload_header.lower())
    return names


def service_address(items: list[dict[str, Any]]) -> tuple[str, int]:
    service = one(items, "Service")
    (port,) = service["spec"]["ports"]
    return f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local", port["port"]


@pytest.mark.parametrize("example,dialect", [("ingress-nginx", "nginx"), ("traefik", "traefik"), ("istio", "envoy")])
def test_authorizer_serves_the_authz_port_the_service_names(example: str, dialect: str) -> None:
    config = gateway_config(example)
    items = docs(example)
    assert config.server.authz_dialect == dialect
    assert config.server.authz_listen is not None
    container = one(items, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["gateway-authz"] == config.server.authz_listen.port
    assert ports["gateway-admin"] == config.server.admin_listen.port
    assert config.server.listen.host == "127.0.0.1"  # nothing is proxied: the proxy port stays on loopback
    service = one(items, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["gateway-authz"]
    kustomization = yaml.safe_load((K8S / example / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    volume = one(items, "Deployment")["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == kustomization["configMapGenerator"][0]["name"]
    grace = one(items, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > config.server.shutdown_grace


def test_ingress_nginx_annotations() -> None:
    items = docs("ingress-nginx")
    config = gateway_config("ingress-nginx")
    annotations = one(items, "Ingress")["metadata"]["annotations"]
    auth_url = urlsplit(annotations["nginx.ingress.kubernetes.io/auth-url"])
    assert (auth_url.hostname, auth_url.port) == service_address(items)
    copied = {h.strip().lower() for h in annotations["nginx.ingress.kubernetes.io/auth-response-headers"].split(",")}
    assert copied == claim_headers(config)
    # The normalized path goes upstream: a regex path rewritten to its capture.
    assert annotations["nginx.ingress.kubernetes.io/rewrite-target"] == "/$1"
    paths = one(items, "Ingress")["spec"]["rules"][0]["http"]["paths"]
    assert [p["path"] for p in paths] == ["/(.*)"]


def test_traefik_forward_auth_middleware() -> None:
    items = docs("traefik")
    config = gateway_config("traefik")
    middleware = one(items, "Middleware")
    assert middleware["apiVersion"] == "traefik.io/v1alpha1"
    forward_auth = middleware["spec"]["forwardAuth"]
    assert set(forward_auth) <= FORWARD_AUTH_FIELDS
    address = urlsplit(forward_auth["address"])
    assert (address.hostname, address.port) == service_address(items)
    assert forward_auth["trustForwardHeader"] is False
    assert {h.lower() for h in forward_auth["authResponseHeaders"]} == claim_headers(config)
    token_headers = {s.name.lower() for s in config.tokens if s.location == "header"} | {"cookie"}
    assert token_headers <= {h.lower() for h in forward_auth["authRequestHeaders"]}
    ingress = one(items, "Ingress")
    assert ingress["metadata"]["annotations"]["traefik.ingress.kubernetes.io/router.middlewares"] == (
        f"{NAMESPACE}-{middleware['metadata']['name']}@kubernetescrd"
    )


def test_istio_extension_provider_and_custom_policy() -> None:
    items = docs("istio")
    config = gateway_config("istio")
    operator = yaml.safe_load((K8S / "istio" / "istio-operator.yaml").read_text())
    assert operator["apiVersion"] == "install.istio.io/v1alpha1" and operator["kind"] == "IstioOperator"
    mesh = operator["spec"]["meshConfig"]
    assert mesh["pathNormalization"]["normalization"] in ("MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES")
    (provider,) = mesh["extensionProviders"]
    http = provider["envoyExtAuthzHttp"]
    assert set(http) <= ENVOY_EXT_AUTHZ_HTTP_FIELDS
    assert (http["service"], http["port"]) == service_address(items)
    assert http["pathPrefix"] == config.server.authz_path_prefix
    assert {h.lower() for h in http["headersToUpstreamOnAllow"]} == claim_headers(config)
    assert "www-authenticate" in http["headersToDownstreamOnDeny"]
    policy = one(items, "AuthorizationPolicy")
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["spec"]["action"] == "CUSTOM" and policy["spec"]["provider"]["name"] == provider["name"]
    # The guarded workload's sidecars are the only callers the NetworkPolicy admits.
    netpol_patch = yaml.safe_load(yaml.safe_load((K8S / "istio" / "kustomization.yaml").read_text())["patches"][0]["patch"])
    assert netpol_patch[0]["value"][0]["podSelector"]["matchLabels"] == policy["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize("name", ["nginx.conf", "envoy.yaml", "traefik.yaml"])
def test_readme_shows_the_configurations_the_end_to_end_tests_run(name: str) -> None:
    text = (DECISION / name).read_text()
    assert text in (REPO / "README.md").read_text(), f"README must show deploy/decision/{name} verbatim"


def test_envoy_config_copies_and_strips_the_claim_headers_the_test_config_sets() -> None:
    envoy = yaml.safe_load((DECISION / "envoy.yaml").read_text())
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True
    ext_authz = hcm["http_filters"][0]["typed_config"]
    assert ext_authz["failure_mode_allow"] is False
    upstream = {p["exact"] for p in ext_authz["http_service"]["authorization_response"]["allowed_upstream_headers"]["patterns"]}
    assert upstream == {"x-user-id", "x-user-email", "x-user-roles", "x-jwt-payload"}  # tests/proxy/conftest.py's
