#!/usr/bin/env bash
# A pod on one machine: the way Kubernetes builds a pod, with ip netns + veth.
#
#   host netns  --veth (10.203.0.1/30)-------(10.203.0.2/30)--  netns "gwpod-PID" = the pod
#                                                                   lo: 127.0.0.1
#                                                                   echo app  on 127.0.0.1:8000
#                                                                   gateway   on 0.0.0.0:8080, admin 0.0.0.0:9901
# From the host (as from another node), only the namespace's address is used:
#   valid token -> 200 from the app with the claim header; no / bad / expired token -> 401;
#   the app port 10.203.0.2:8000 cannot be reached at all; a ConfigMap-style ..data symlink
#   swap reloads the config; SIGTERM drains and exits 0.
# 10.203.0.0/30 exists only between the two veth ends on this machine; nothing is sent anywhere else.
# Needs root and iproute2. Usage: deploy/pod-test.sh [METRICS_OUT_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "pod-test: needs root (ip netns)" >&2; exit 1; }
command -v ip >/dev/null || { echo "pod-test: needs iproute2" >&2; exit 1; }

NS="gwpod-$$"
HOST_IF="gwh$$"; POD_IF="gwp$$"       # <= 15 characters
HOST_IP=10.203.0.1; POD_IP=10.203.0.2; PREFIX=30
METRICS_OUT=${1:-}
WORK=$(mktemp -d /tmp/pod-test.XXXXXX)
chmod 755 "$WORK"

cleanup() {
    local rc=$?
    if ip netns list | grep -qw "$NS"; then
        # Whatever still runs in the pod goes with it.
        for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
        ip netns del "$NS" 2>/dev/null || true
    fi
    ip link del "$HOST_IF" 2>/dev/null || true
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT INT TERM

# The /30 must be unused here, so the test's packets can only go over the veth.
if ip -4 route show | grep -q "^10\.203\.0\."; then
    echo "pod-test: 10.203.0.0/30 already routed on this machine; refusing" >&2; exit 1
fi

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$POD_IF"
ip link set "$POD_IF" netns "$NS"
ip addr add "$HOST_IP/$PREFIX" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" addr add "$POD_IP/$PREFIX" dev "$POD_IF"
ip -n "$NS" link set "$POD_IF" up
ip -n "$NS" link set lo up

PY=.venv/bin/python
timeout 120 "$PY" deploy/podtest/pod_test.py \
    --netns "$NS" --pod-ip "$POD_IP" --work "$WORK" ${METRICS_OUT:+--metrics-out "$METRICS_OUT"}
