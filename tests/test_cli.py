"""The command line: --version, --help, python -m gateway, run refusing bad config or a busy port with a clear message."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import gateway

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_version_and_help() -> None:
    version = run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"gateway {gateway.__version__}"
    helptext = run("--help")
    assert helptext.returncode == 0
    for command in ("run", "check", "demo"):
        assert command in helptext.stdout


def test_run_refuses_an_invalid_config_with_every_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  listen: nowhere\nroutes:\n  - name: a\n    match: {prefix: x}\n    auth: maybe\n")
    result = run("run", "-c", str(bad))
    assert result.returncode == 1
    [line] = [json.loads(text) for text in result.stderr.splitlines()]  # a running gateway writes JSON only
    assert line["level"] == "error" and "not starting" in line["msg"]
    where = [(i["file"], i["line"], i["path"]) for i in line["issues"]]
    assert where == [(str(bad), 2, "server.listen"), (str(bad), 5, "routes[0].match.prefix"), (str(bad), 6, "routes[0].auth")]


def test_run_uses_gateway_config_env(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run"], capture_output=True, text=True, timeout=30,
        env={"GATEWAY_CONFIG": str(missing), "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert str(missing) in result.stderr


def test_run_on_a_busy_port_exits_1_with_a_message(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(f'server:\n  listen: "127.0.0.1:{port}"\n  admin_listen: "127.0.0.1:0"\n')
        result = run("run", "-c", str(cfg))
    assert result.returncode == 1
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
