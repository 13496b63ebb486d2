"""The command line: --version, --help, python -m gateway, run refusing bad config or a busy port with a clear message."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
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


def test_dpop_proof_prints_a_proof_or_the_thumbprint(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.jose.dpop import DpopPolicy, ExternalUri, check_proof, jwk_thumbprint
    from gateway.sanitize import normalize_path

    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "k.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    proof = run("dpop-proof", "--key", str(pem), "--method", "POST", "--url", "https://a.example/x", "--token", "t.t.t")
    assert proof.returncode == 0, proof.stderr
    jkt = run("dpop-proof", "--key", str(pem), "--jkt").stdout.strip()
    checked = check_proof(proof.stdout.strip(), DpopPolicy(frozenset({"ES256"}), 60, 30), method="POST",
                          uri=ExternalUri("https", "a.example", "/x"), access_token="t.t.t",
                          now=time.time(), normalize_path=normalize_path)
    nums = key.public_key().public_numbers()
    assert checked.jkt == jkt == jwk_thumbprint({
        "kty": "EC", "crv": "P-256",
        "x": base64.urlsafe_b64encode(nums.x.to_bytes(32, "big")).rstrip(b"=").decode(),
        "y": base64.urlsafe_b64encode(nums.y.to_bytes(32, "big")).rstrip(b"=").decode(),
    })
    missing = run("dpop-proof", "--key", str(tmp_path / "none.pem"))
    assert missing.returncode == 1 and "none.pem" in missing.stderr
