# syntax=docker/dockerfile:1
# JWT sidecar gateway image.
#   docker build -t jwt-sidecar-gateway:0.1.0 .
#   docker run --read-only -v "$PWD/config:/etc/gateway:ro" -p 8080:8080 jwt-sidecar-gateway:0.1.0
#
# tests/deploy/test_dockerfile_steps.py executes this file's COPY/ENV/RUN steps in a
# fresh virtual environment (no Docker engine needed) and starts the result: keep the
# steps in plain `RUN` shell form using the ARG/ENV paths below, so the test can replay them.

# ---- stage 1: build every wheel (the project's and all its dependencies') ----
# Base pinned by version tag (both stages the same); add @sha256:<digest> when you publish.
FROM python:3.11.13-slim-bookworm AS build
ARG WHEELS=/wheels
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# README.m[d]: copied when present (pyproject's long description), no error when not.
COPY pyproject.toml README.m[d] ./
COPY gateway ./gateway
# Dependencies only as binary wheels (aiohttp, uvloop, cryptography, ... all ship manylinux
# wheels), so neither this stage nor the final one needs a compiler.
RUN python -m pip wheel --no-deps --wheel-dir "$WHEELS" . \
 && python -m pip wheel --only-binary=:all: --wheel-dir "$WHEELS" "$WHEELS"/jwt_sidecar_gateway-*.whl

# ---- stage 2: runtime: the base image plus a venv installed from those wheels only ----
FROM python:3.11.13-slim-bookworm AS runtime
ARG WHEELS=/wheels
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/gateway \
    HOME=/tmp \
    GATEWAY_CONFIG=/etc/gateway/gateway.yaml
# --no-index: nothing is fetched or compiled here; bytecode is compiled at install time
# (PYTHONDONTWRITEBYTECODE keeps the running process from writing any, so the root
# filesystem can be read-only). The last command proves uvloop, the event loop the
# gateway runs on, is installed and imports.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv --without-pip "$VIRTUAL_ENV" \
 && python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-index --find-links "$WHEELS" jwt-sidecar-gateway \
 && "$VIRTUAL_ENV/bin/python" -c "import uvloop, gateway.server"

# Set only now: in the RUN above, `python` must still be the base image's (which has pip).
ENV PATH=${VIRTUAL_ENV}/bin:${PATH}

# No config and no secret in the image: mount the config at /etc/gateway (a ConfigMap
# directory in Kubernetes) and pass HS secrets by environment or mounted file.
WORKDIR /tmp
USER 65532:65532
# 8080: the proxy port; 9901: admin (/healthz /readyz /metrics; listen on 0.0.0.0 in a pod).
EXPOSE 8080 9901
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9901/healthz', timeout=2)"]
ENTRYPOINT ["gateway", "run"]
