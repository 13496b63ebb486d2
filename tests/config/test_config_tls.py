"""`server.tls` and `server.forwarded_client_cert`: files loaded at check time, every mistake with its key path and line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.config.helpers import doc, marked_line, only_issue, parse
from tests.proxy.pki import Ca


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca("config-test-ca")


@pytest.fixture
def files(tmp_path: Path, ca: Ca) -> Path:
    server = ca.issue("gw", server=True)
    server.write(tmp_path / "tls", "tls")
    (tmp_path / "tls" / "ca.crt").write_bytes(ca.own.cert_pem)
    other = ca.issue("other", server=True)
    (tmp_path / "tls" / "other.key").write_bytes(other.key_pem)
    (tmp_path / "tls" / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    encrypted = server.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    (tmp_path / "tls" / "encrypted.key").write_bytes(encrypted)
    ca.issue("old", server=True, expired=True).write(tmp_path / "tls", "expired")
    return tmp_path


def tls(*lines: str) -> str:
    return doc("server:\n  tls:\n" + "".join(f"    {line}\n" for line in lines))


def test_relative_paths_resolve_against_the_config_file(files: Path) -> None:
    cfg = parse(tls("cert_file: tls/tls.crt", "key_file: tls/tls.key", "client_ca_file: tls/ca.crt", "client_auth: required", "min_version: 1.3"), base_dir=files)
    assert cfg.server.tls is not None
    assert cfg.server.tls.cert_file == str(files / "tls" / "tls.crt")
    assert cfg.server.tls.client_ca_file == str(files / "tls" / "ca.crt")
    assert (cfg.server.tls.client_auth, cfg.server.tls.min_version) == ("required", "1.3")  # an unquoted 1.3 is read as "1.3"


def test_defaults(files: Path) -> None:
    cfg = parse(tls("cert_file: tls/tls.crt", "key_file: tls/tls.key"), base_dir=files)
    assert cfg.server.tls is not None
    assert (cfg.server.tls.client_auth, cfg.server.tls.min_version, cfg.server.tls.client_ca_file) == ("none", "1.2", None)
    assert parse("server: {}\n").server.tls is None  # plain HTTP unless configured


CASES = [
    ("missing_cert", ["cert_file: tls/nope.crt  # <-", "key_file: tls/tls.key"], "server.tls.cert_file", "cannot read the file (No such file"),
    ("missing_key", ["cert_file: tls/tls.crt", "key_file: nope.key  # <-"], "server.tls.key_file", "cannot read the file"),
    ("key_of_another_cert", ["cert_file: tls/tls.crt", "key_file: tls/other.key  # <-"], "server.tls.key_file", "does not match the certificate"),
    ("expired", ["cert_file: tls/expired.crt  # <-", "key_file: tls/expired.key"], "server.tls.cert_file", "the certificate expired at"),
    ("cert_not_pem", ["cert_file: tls/garbage.pem  # <-", "key_file: tls/tls.key"], "server.tls.cert_file", "not a PEM certificate chain"),
    ("cert_is_a_key", ["cert_file: tls/tls.key  # <-", "key_file: tls/tls.key"], "server.tls.cert_file", "not a PEM certificate chain"),
    ("key_is_a_cert", ["cert_file: tls/tls.crt", "key_file: tls/tls.crt  # <-"], "server.tls.key_file", "not a PEM private key"),
    ("encrypted_key", ["cert_file: tls/tls.crt", "key_file: tls/encrypted.key  # <-"], "server.tls.key_file", "encrypted"),
    ("ca_not_pem", ["cert_file: tls/tls.crt", "key_file: tls/tls.key", "client_ca_file: tls/tls.key  # <-", "client_auth: optional"],
        "server.tls.client_ca_file", "not a PEM bundle of CA certificates"),
    ("auth_without_ca", ["cert_file: tls/tls.crt", "key_file: tls/tls.key", "client_auth: required  # <-"],
        "server.tls.client_auth", "needs client_ca_file"),
    ("ca_without_auth", ["cert_file: tls/tls.crt", "key_file: tls/tls.key", "client_ca_file: tls/ca.crt  # <-"],
        "server.tls.client_ca_file", "client_auth is none"),
    ("bad_auth", ["cert_file: tls/tls.crt", "key_file: tls/tls.key", "client_auth: require  # <-"],
        "server.tls.client_auth", "did you mean 'required'"),
    ("tls_1_1", ["cert_file: tls/tls.crt", "key_file: tls/tls.key", 'min_version: "1.1"  # <-'], "server.tls.min_version", "not one of 1.2, 1.3"),
    ("no_key_file", ["cert_file: tls/tls.crt  # <-"], "server.tls.key_file", "missing required key 'key_file'"),
    ("unknown_key", ["cert_file: tls/tls.crt", "key_file: tls/tls.key", "ciphers: HIGH  # <-"], "server.tls.ciphers", "unknown key"),
]


@pytest.mark.parametrize(("lines", "path", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tls_error_names_path_and_line(files: Path, lines: list[str], path: str, fragment: str) -> None:
    text = tls(*lines)
    issue = only_issue(text, base_dir=files)
    assert issue.path == path
    # A missing key is reported on its mapping's line; everything else on its own line.
    expected_line = 2 if "missing required" in fragment else marked_line(text)
    assert issue.line == expected_line, str(issue)
    assert fragment in issue.message, str(issue)


def xfcc(*lines: str) -> str:
    return doc("server:\n  forwarded_client_cert:\n" + "".join(f"    {line}\n" for line in lines))


def test_forwarded_client_cert() -> None:
    cfg = parse(xfcc('trusted_peers: ["10.0.0.0/8", "::1"]'))
    assert cfg.server.forwarded_client_cert is not None
    assert cfg.server.forwarded_client_cert.trusted_peers == ("10.0.0.0/8", "::1")
    assert cfg.server.forwarded_client_cert.header == "x-forwarded-client-cert"
    assert parse("server: {}\n").server.forwarded_client_cert is None  # never believed by default


XFCC_CASES = [
    ("no_peers", ["header: x-client-cert  # <-"], "server.forwarded_client_cert.trusted_peers", "missing required key"),
    ("empty_peers", ["trusted_peers: []  # <-"], "server.forwarded_client_cert.trusted_peers", "at least one"),
    ("bad_cidr", ['trusted_peers: ["10.0.0.0/33"]  # <-'], "server.forwarded_client_cert.trusted_peers[0]", "not an IP address or CIDR"),
    ("host_bits", ['trusted_peers: ["10.0.0.1/8"]  # <-'], "server.forwarded_client_cert.trusted_peers[0]", "has host bits set"),
    ("bad_header", ['trusted_peers: ["10.0.0.0/8"]', 'header: "x client"  # <-'], "server.forwarded_client_cert.header", "not a valid header name"),
]


@pytest.mark.parametrize(("lines", "path", "fragment"), [c[1:] for c in XFCC_CASES], ids=[c[0] for c in XFCC_CASES])
def test_forwarded_client_cert_errors(lines: list[str], path: str, fragment: str) -> None:
    text = xfcc(*lines)
    issue = only_issue(text)
    assert issue.path == path
    assert issue.line == (2 if "missing required" in fragment else marked_line(text)), str(issue)
    assert fragment in issue.message, str(issue)


def test_gateway_check_reports_tls_errors_and_no_key_material(files: Path) -> None:
    config = files / "gateway.yaml"
    config.write_text(tls("cert_file: tls/tls.crt", "key_file: tls/other.key", "client_auth: optional"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(config)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"{config}:4: server.tls.key_file: {files / 'tls' / 'other.key'}: the private key does not match the certificate"
    assert lines[1].startswith(f"{config}:5: server.tls.client_auth: client_auth optional needs client_ca_file")
    key_body = (files / "tls" / "other.key").read_text().splitlines()[1]
    assert key_body not in result.stdout + result.stderr
