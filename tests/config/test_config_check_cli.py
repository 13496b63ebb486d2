"""`gateway check` end to end in a subprocess: exit codes, every error with its line, and no secret in the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
THREE = Path(__file__).parent / "data" / "three_errors.yaml"
SECRET = "cli-planted-secret-VALUE-0123456789-abcdefghij"


def check(path: Path | str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(path)],
        cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60,
    )


def test_check_example_exits_0() -> None:
    result = check("config/gateway.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "config/gateway.yaml: valid: 1 issuer(s), 5 route(s)"


def test_check_three_errors_exits_1_naming_each() -> None:
    result = check(THREE)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{THREE}:4: server.shutdown_grace: ")
    assert lines[1].startswith(f"{THREE}:11: issuers[0].algorithms[1]: ")
    assert "RFC 8725" in lines[1]
    assert lines[2].startswith(f"{THREE}:17: routes[0].issuers[0]: unknown issuer 'crop'")
    assert lines[3] == f"{THREE}: 3 error(s)"


def test_check_never_prints_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "hs.key"
    secret_file.write_text(SECRET[::-1] + "\n")
    config = tmp_path / "gw.yaml"
    config.write_text(
        THREE.read_text()
        + "  - name: hs\n    issuer: hs\n    algorithms: [HS256]\n    secret: {env: GW_CLI_SECRET}\n"
        + "  - name: hs2\n    issuer: hs2\n    algorithms: [HS512]\n    secret: {file: hs.key}\n"  # too short: an error
        + "  - name: hs3\n    issuer: hs3\n    algorithms: [HS256]\n    secret: " + SECRET.upper() + "\n"  # inline: an error
    )
    result = check(config, env={"GW_CLI_SECRET": SECRET})
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert "5 error(s)" in out
    for planted in (SECRET, SECRET[::-1], SECRET.upper()):
        assert planted not in out
