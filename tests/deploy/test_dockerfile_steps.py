"""The Dockerfile's steps, proven without a Docker engine.

The test reads ./Dockerfile and replays its stages here: the build stage's COPY and RUN
lines build the wheels, the runtime stage's RUN line installs them (--no-index) into a
fresh venv, and the image's ENTRYPOINT runs with the image's ENV (GATEWAY_CONFIG, ...),
the image paths (/opt/gateway, /wheels, /etc/gateway, ...) mapped under a temp dir.
Only pip's cache is shared (PIP_NO_CACHE_DIR is the one ENV the replay ignores), so
a second run is fast. Needs python3 and the package index that `make test` uses anyway.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.deploy.dockerfile import REPO, Replay, Stage, env_pairs, expand, load, make_base_python, split_flags

PROJECT_WHEEL = "jwt_sidecar_gateway-*.whl"


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return load()


def _env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage.instructions:
        if ins.keyword in ("ARG", "ENV"):
            for key, value in env_pairs(ins.args):
                env[key] = expand(value, env)
    return env


# ---------------------------------------------------------------- static properties


def test_multi_stage_pinned_slim_base(stages: list[Stage]) -> None:
    assert len(stages) >= 2, "wheels are built in a stage of their own"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", stage.base), stage.base
    assert stages[0].name == "build"


def test_final_stage_has_no_compiler_and_installs_wheels_only(stages: list[Stage]) -> None:
    final = stages[-1]
    text = " ".join(i.args for i in final.instructions if i.keyword == "RUN")
    for word in ("apt-get", "gcc", "build-essential", "g++", "clang", "apk "):
        assert word not in text, f"final stage installs {word}"
    assert "--no-index" in text, "the runtime install uses the built wheels and nothing else"
    flags = [split_flags(i.args)[0] for i in final.all("RUN")]
    assert any("from=build" in f.get("mount", "") for f in flags), "wheels come from the build stage"


def test_runtime_user_entrypoint_env_ports(stages: list[Stage]) -> None:
    final = stages[-1]
    (user,) = final.all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric non-root user (runAsNonRoot can verify it)"
    assert not gid or (gid.isdigit() and int(gid) != 0)
    assert Replay.entrypoint(final) == ["gateway", "run"], "exec form, config from $GATEWAY_CONFIG"
    env = _env_of(final)
    assert env["GATEWAY_CONFIG"] == "/etc/gateway/gateway.yaml"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "read-only root filesystem: no .pyc writes"
    ports = {p for i in final.all("EXPOSE") for p in i.args.split()}
    assert ports == {"8080", "9901"}


def test_no_secrets_baked_in(stages: list[Stage]) -> None:
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword in ("ARG", "ENV"):
                for key, _ in env_pairs(ins.args):
                    assert not re.search(r"SECRET|TOKEN|PASSWORD|PRIVATE|_KEY$", key, re.I), key
            if ins.keyword in ("COPY", "ADD"):
                assert ins.keyword == "COPY", "ADD fetches or unpacks: not used"
                _, rest = split_flags(ins.args)
                for src in rest.split()[:-1]:
                    assert not src.startswith(("config", ".env", "tests", "deploy")), src
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    assert ignore[0] == "*", ".dockerignore excludes everything, then admits only what the image needs"
    assert not any(line.startswith("!") and ("config" in line or ".env" in line) for line in ignore)


# ---------------------------------------------------------------- the replay


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _pip_cache_dir() -> str:
    out = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else str(Path.home() / ".cache" / "pip")


def test_dockerfile_steps_build_install_and_run(stages: list[Stage], tmp_path: Path) -> None:
    started = time.monotonic()
    base_bin = make_base_python(tmp_path / "base-python")
    path_map = {
        "/wheels": tmp_path / "wheels",
        "/src": tmp_path / "src",
        "/opt/gateway": tmp_path / "opt-gateway",
        "/etc/gateway": tmp_path / "etc-gateway",
        "/tmp": tmp_path / "tmp",
    }
    (tmp_path / "tmp").mkdir()
    base_env = {
        "PATH": f"{base_bin}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        # pip's cache is the one thing shared with earlier runs (the image disables it).
        "PIP_CACHE_DIR": _pip_cache_dir(),
    }
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE", "SSL_CERT_FILE"):
        if key in os.environ:
            base_env[key] = os.environ[key]
    replay = Replay(tmp_path, path_map, ignore_env={"PIP_NO_CACHE_DIR"}, base_env=base_env)

    build, runtime = stages[0], stages[-1]
    replay.run_stage(build, timeout=240)
    wheels = sorted(p.name for p in (tmp_path / "wheels").iterdir())
    assert all(w.endswith(".whl") for w in wheels), f"only wheels, nothing to compile: {wheels}"
    assert any(re.fullmatch(r"jwt_sidecar_gateway-.*\.whl", w) for w in wheels)
    assert any(w.startswith("uvloop-") for w in wheels)

    env = replay.run_stage(runtime, timeout=240)
    venv = tmp_path / "opt-gateway"
    assert env["VIRTUAL_ENV"] == str(venv) and env["PATH"].startswith(f"{venv}/bin:")
    assert not (venv / "bin" / "pip").exists(), "the runtime venv carries no pip"
    gateway = venv / "bin" / "gateway"

    # `gateway check` on the example config, with the image's environment.
    check = subprocess.run(
        [str(gateway), "check", "-c", str(REPO / "config" / "gateway.yaml")],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert check.returncode == 0, check.stderr

    # The ENTRYPOINT, configured the image's way: a file at $GATEWAY_CONFIG (/etc/gateway/gateway.yaml).
    proxy_port, admin_port = _free_port(), _free_port()
    etc = tmp_path / "etc-gateway"
    etc.mkdir()
    (etc / "jwks.json").write_text((REPO / "config" / "jwks.json").read_text())
    (etc / "gateway.yaml").write_text(
        f"""
server:
  listen: "127.0.0.1:{proxy_port}"
  admin_listen: "127.0.0.1:{admin_port}"
  shutdown_grace: 1s
upstream:
  url: "http://127.0.0.1:9"
issuers:
  - name: corp
    issuer: "https://idp.example.com/"
    algorithms: [RS256, ES256]
    jwks: {{file: jwks.json}}
routes:
  - name: api
    match: {{prefix: /}}
    auth: required
"""
    )
    assert env["GATEWAY_CONFIG"] == str(etc / "gateway.yaml")
    before = _tree(venv)
    workdir = Path(replay.map_path(runtime.all("WORKDIR")[-1].args))
    proc = subprocess.Popen(
        Replay.entrypoint(runtime), cwd=workdir, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"gateway exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}"
            try:
                status, _ = _get(f"http://127.0.0.1:{admin_port}/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert status == 200, "no /healthz 200 within 20 s"
        assert _get(f"http://127.0.0.1:{admin_port}/readyz")[0] == 200
        status, body = _get(f"http://127.0.0.1:{proxy_port}/anything")
        assert status == 401 and json.loads(body)["error"]
        metrics = _get(f"http://127.0.0.1:{admin_port}/metrics")[1].decode()
        assert "gateway_requests_total" in metrics
        maps = Path(f"/proc/{proc.pid}/maps")
        if maps.exists():  # Linux: the uvloop extension is loaded into the running process
            assert "uvloop" in maps.read_text(), "the gateway does not run on uvloop"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "uvloop not available" not in err
    assert _tree(venv) == before, "the running gateway wrote into its install (breaks readOnlyRootFilesystem)"
    assert time.monotonic() - started < 120
