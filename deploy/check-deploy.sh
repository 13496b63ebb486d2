#!/usr/bin/env bash
# Every deployment check, in one go; exits non-zero if any fails (all of them still run).
#   bash .ci/deploy-tools.sh && bash deploy/check-deploy.sh      (make check-deploy)
#
#  1. hadolint        Dockerfile, .hadolint.yaml (failure threshold: info, nothing ignored)
#  2. kustomize       `kubectl kustomize` of every overlay under deploy/overlays and of every
#                     decision-mode example under deploy/decision/k8s
#     kubernetes-validate --strict against the Kubernetes versions stated below; the one CRD
#     kind used (PodMonitor, monitoring.coreos.com/v1) has no schema there: it is the only
#     "Couldn't find schema" allowed, and tests/deploy/manifests_check.py checks its fields
#     and that its selector and port meet the pod (with the other cross-checks: probes,
#     securityContext, ports, Service, NetworkPolicy, PDB, ConfigMap mount, `gateway check`
#     of the ConfigMap's config, terminationGracePeriodSeconds > shutdown_grace).
#  3. checkov         policy checks of the rendered overlays and the Dockerfile;
#                     skipped checks, each with its reason: deploy/checkov.yaml
#  4. promtool        check rules + test rules (deploy/prometheus)
#  5. pod test        deploy/pod-test.sh (root, iproute2), then promtool check metrics on
#                     the /metrics it scraped from the running gateway
set -uo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions each overlay is validated against: the native sidecar needs 1.29+
# (restartPolicy on init containers; 1.27 rejects it), the classic form is for older clusters.
declare -A K8S_VERSIONS=(
    [example]="1.29.0 1.33.0"
    [classic-sidecar]="1.27.0 1.33.0"
)
declare -A SIDECAR=([example]=native [classic-sidecar]=classic)

# CRD kinds kubernetes-validate has no schema for; tests/deploy checks their fields instead
# (manifests_check.py: PodMonitor; test_decision_examples.py: Middleware, AuthorizationPolicy).
SCHEMALESS_CRDS="PodMonitor with api version monitoring.coreos.com/v1|Middleware with api version traefik.io/v1alpha1"
SCHEMALESS_CRDS+="|AuthorizationPolicy with api version security.istio.io/v1"

TOOLS=${DEPLOY_VENV:-.venv-deploy}/bin
PY=.venv/bin/python
OUT=$(mktemp -d /tmp/check-deploy.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
failed=()
passed=()

step() {  # step NAME COMMAND...: run, report, remember
    local name=$1; shift
    echo "==> $name"
    if "$@"; then passed+=("$name"); else echo "FAILED: $name" >&2; failed+=("$name"); fi
}

for tool in "$TOOLS/hadolint" "$TOOLS/kubectl" "$TOOLS/kubernetes-validate" "$TOOLS/checkov"; do
    [ -x "$tool" ] || { echo "check-deploy: $tool missing: run bash .ci/deploy-tools.sh" >&2; exit 2; }
done
command -v promtool >/dev/null || { echo "check-deploy: promtool missing: run bash .ci/deploy-tools.sh" >&2; exit 2; }
[ -x "$PY" ] || make -s venv >/dev/null

echo "tools: $("$TOOLS/hadolint" --version); kubectl $("$TOOLS/kubectl" version --client 2>/dev/null | tr '\n' ' ');" \
     "kubernetes-validate $("$TOOLS/kubernetes-validate" --version); checkov $("$TOOLS/checkov" --version);" \
     "$(promtool --version 2>&1 | head -1)"

# 1. Dockerfile
step "hadolint Dockerfile" "$TOOLS/hadolint" --config .hadolint.yaml Dockerfile

# 2. Manifests
validate() {  # validate OVERLAY VERSION
    local log="$OUT/$1-$2.log"
    "$TOOLS/kubernetes-validate" --strict -k "$2" "$OUT/$1.yaml" >"$log" 2>&1
    local rc=$?
    grep -v "^INFO" "$log"
    grep -c "^INFO .* passed" "$log" | sed "s/^/  resources passed: /"
    # Any missing schema other than the CRDs named in SCHEMALESS_CRDS is a failure too.
    if grep "^WARN" "$log" | grep -Eqv "Couldn't find schema for kind ($SCHEMALESS_CRDS) "; then
        echo "unexpected warning" >&2; return 1
    fi
    return $rc
}
mkdir -p "$OUT/rendered"
for dir in deploy/overlays/*/; do
    overlay=$(basename "$dir")
    step "kubectl kustomize $overlay" sh -c "'$TOOLS/kubectl' kustomize '$dir' > '$OUT/$overlay.yaml'"
    cp "$OUT/$overlay.yaml" "$OUT/rendered/$overlay.yaml"
    for version in ${K8S_VERSIONS[$overlay]:?"state the Kubernetes versions for overlay $overlay"}; do
        step "kubernetes-validate --strict $overlay @ $version" validate "$overlay" "$version"
    done
    step "cross-check $overlay" "$PY" -m tests.deploy.manifests_check "$OUT/$overlay.yaml" --sidecar "${SIDECAR[$overlay]:?}"
done
# Decision-mode examples: the gateway as the authorizer of ingress-nginx, Traefik and Istio.
for dir in deploy/decision/k8s/*/; do
    example=$(basename "$dir")
    [ "$example" = authorizer ] && continue   # shared by the examples, not applied alone
    step "kubectl kustomize decision/$example" \
        sh -c "'$TOOLS/kubectl' kustomize '$dir' > '$OUT/decision-$example.yaml'"
    cp "$OUT/decision-$example.yaml" "$OUT/rendered/decision-$example.yaml"
    for version in 1.29.0 1.33.0; do
        step "kubernetes-validate --strict decision/$example @ $version" validate "decision-$example" "$version"
    done
done

# 3. Policy (offline: in an empty network namespace when possible; checkov calls home otherwise)
NOnet=()
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then NOnet=(unshare --net); fi
step "checkov kubernetes (rendered overlays)" \
    "${NOnet[@]}" "$TOOLS/checkov" --config-file deploy/checkov.yaml -d "$OUT/rendered" --framework kubernetes
step "checkov dockerfile" \
    "${NOnet[@]}" "$TOOLS/checkov" --config-file deploy/checkov.yaml -f Dockerfile --framework dockerfile

# 4. Alert rules
step "promtool check rules" promtool check rules deploy/prometheus/gateway-alerts.yaml
step "promtool test rules" promtool test rules deploy/prometheus/gateway-alerts.test.yaml

# 5. A pod on one machine, and a real scrape
step "pod on one machine (deploy/pod-test.sh)" timeout 180 bash deploy/pod-test.sh "$OUT/scrape.txt"
check_metrics() {
    [ -s "$OUT/scrape.txt" ] || { echo "no scrape" >&2; return 1; }
    local lint; lint=$(promtool check metrics <"$OUT/scrape.txt" 2>&1); local rc=$?
    [ -z "$lint" ] || echo "$lint"
    echo "  $(grep -c '^gateway_' "$OUT/scrape.txt") gateway_* samples, $(grep -c '^# TYPE' "$OUT/scrape.txt") families"
    return $rc
}
step "promtool check metrics (scrape of the running gateway)" check_metrics

echo
echo "check-deploy: ${#passed[@]} passed, ${#failed[@]} failed"
for f in "${failed[@]}"; do echo "  FAILED: $f"; done
[ ${#failed[@]} -eq 0 ]
