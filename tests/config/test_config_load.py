"""Valid configs: the example file, defaults, value formats, secrets, file paths, and the all-errors-at-once contract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config.errors import ConfigInvalid, ConfigIssue
from gateway.config.load import load_config, parse_config
from gateway.config.model import DEFAULT_TOKEN_SOURCES, GatewayConfig, Listen, Secret
from gateway.config.values import parse_duration, parse_listen
from tests.config.helpers import ISSUER, doc, issues, only_issue, parse

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "gateway.yaml"
THREE = Path(__file__).parent / "data" / "three_errors.yaml"
HS_SECRET = "correct-horse-battery-staple-0123456789abcdef"  # 45 bytes: enough for HS256 and HS384


def test_example_config_parses() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert [i.name for i in cfg.issuers] == ["corp"]
    jwks = cfg.issuers[0].jwks
    assert jwks is not None and jwks.kind == "file"
    assert jwks.location == str(REPO / "config" / "jwks.json")  # relative to the config file, made absolute
    assert [r.name for r in cfg.routes] == ["public", "admin", "health", "reports", "api"]
    assert cfg.routes[1].match.methods == ("POST", "DELETE")
    assert cfg.forward.claims_to_headers[2] == ("realm_access.roles", "X-User-Roles")
    assert cfg.cache.ttl == 300.0
    assert cfg.source == str(EXAMPLE)


def test_example_commented_hs_issuer_is_valid_when_uncommented() -> None:
    text = EXAMPLE.read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "# - name: legacy")
    for i in range(start, start + 4):
        lines[i] = lines[i].replace("  # ", "  ", 1)
    cfg = parse_config("\n".join(lines), source="x", base_dir=EXAMPLE.parent, environ={"LEGACY_HS_SECRET": "k" * 32})
    legacy = cfg.issuers[1]
    assert legacy.algorithms == ("HS256",) and legacy.jwks is None
    assert legacy.secret == Secret(b"k" * 32)


def test_empty_document_is_all_defaults() -> None:
    for text in ("", "# nothing\n", "{}\n"):
        cfg = parse(text)
        assert cfg.tokens == DEFAULT_TOKEN_SOURCES
        assert cfg.routes == () and cfg.issuers == ()
        assert cfg.server.listen == Listen("0.0.0.0", 8080)


def test_no_routes_is_valid() -> None:
    assert parse(ISSUER).routes == ()


def test_three_planted_errors_exactly() -> None:
    with pytest.raises(ConfigInvalid) as info:
        load_config(THREE, environ={})
    found = [(i.line, i.path) for i in info.value.issues]
    assert found == [(4, "server.shutdown_grace"), (11, "issuers[0].algorithms[1]"), (17, "routes[0].issuers[0]")]
    assert all(i.source == str(THREE) for i in info.value.issues)


def test_every_error_is_reported_and_sorted_by_line() -> None:
    text = doc("""\
        routes:
          - name: r
            match: {prefix: nope}
            auth: maybe
        server:
          listen: x
          listen: y
        cache: {ttl: 5}
        """)
    found = issues(text)
    assert [(i.line, i.path) for i in found] == [
        (3, "routes[0].match.prefix"),
        (4, "routes[0].auth"),
        (6, "server.listen"),
        (7, "server.listen"),  # the duplicate key
        (8, "cache.ttl"),
    ]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("10m", 600), ("24h", 86400), ("1h30m", 5400), ("1.5s", 1.5), ("2d", 172800), ("0s", 0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "30", "-1s", "1 s", "1sec", "1h 30m", "1e3s", "30S"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("0.0.0.0:8080", "0.0.0.0", 8080), ("[::]:9901", "::", 9901), ("[::1]:1", "::1", 1), ("localhost:65535", "localhost", 65535)],
)
def test_listen(text: str, host: str, port: int) -> None:
    listen = parse_listen(text)
    assert (listen.host, listen.port) == (host, port)
    assert str(listen) == text


def test_values_are_normalized() -> None:
    cfg = parse(ISSUER + doc("""\
        routes:
          - name: r
            match: {methods: [get, Post], host: API.Example.COM.}
        """))
    assert cfg.routes[0].match.methods == ("GET", "POST")
    assert cfg.routes[0].match.host == "api.example.com"
    assert cfg.routes[0].auth == "required"


def test_anchors_and_merge_keys_are_not_duplicates() -> None:
    text = doc("""\
        x-jwks: &jwks
          refresh_interval: 5m
          timeout: 2s
        """)
    # x-* is not a known top-level key: anchors live inside known sections instead.
    assert only_issue(text).path == "x-jwks"
    text = ISSUER.replace('jwks: {uri: "https://idp.example.com/jwks.json"}', "jwks: &j {uri: 'https://a/j', timeout: 2s}") + (
        "  - name: two\n"
        "    issuer: two\n"
        "    algorithms: [ES256]\n"
        "    jwks:\n"
        "      <<: *j\n"
        "      timeout: 3s\n"
    )
    cfg = parse(text)
    assert [i.jwks.timeout for i in cfg.issuers if i.jwks] == [2.0, 3.0]


def test_allow_http_permits_plain_http() -> None:
    text = ISSUER.replace('jwks: {uri: "https://idp.example.com/jwks.json"}', "jwks: {uri: 'http://idp:8080/j', allow_http: true}")
    jwks = parse(text).issuers[0].jwks
    assert jwks is not None and jwks.location == "http://idp:8080/j" and jwks.allow_http


def test_inline_jwks_is_plain_json() -> None:
    text = ISSUER.replace(
        'jwks: {uri: "https://idp.example.com/jwks.json"}',
        "jwks:\n      inline: {keys: [{kty: EC, crv: P-256, kid: k1, x: a, y: b}]}",
    )
    jwks = parse(text).issuers[0].jwks
    assert jwks is not None and jwks.kind == "inline"
    assert jwks.inline == {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "x": "a", "y": "b"}]}
    assert type(jwks.inline) is dict and type(jwks.inline["keys"]) is list


def test_jwks_file_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "set.json").write_text('{"keys": []}')
    cfg_file = tmp_path / "gw.yaml"
    cfg_file.write_text(ISSUER.replace('jwks: {uri: "https://idp.example.com/jwks.json"}', "jwks: {file: keys/set.json}"))
    jwks = load_config(cfg_file, environ={}).issuers[0].jwks
    assert jwks is not None and jwks.location == str(tmp_path / "keys" / "set.json")


def test_jwks_file_not_json(tmp_path: Path) -> None:
    (tmp_path / "set.json").write_text("{nope")
    text = ISSUER.replace('jwks: {uri: "https://idp.example.com/jwks.json"}', "jwks: {file: set.json}")
    issue = only_issue(text, base_dir=tmp_path)
    assert issue.path == "issuers[0].jwks.file" and issue.line == 5 and "is not JSON" in issue.message


def test_secret_from_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "hs.key").write_bytes(b"f" * 48 + b"\n")  # one trailing newline dropped
    text = doc("""\
        issuers:
          - name: a
            issuer: a
            algorithms: [HS256]
            secret: {env: A_SECRET}
          - name: b
            issuer: b
            algorithms: [HS384]
            secret: {file: hs.key}
        """)
    cfg = parse(text, environ={"A_SECRET": HS_SECRET}, base_dir=tmp_path)
    a, b = cfg.issuers
    assert a.secret is not None and a.secret.reveal() == HS_SECRET.encode()
    assert b.secret is not None and b.secret.reveal() == b"f" * 48
    assert HS_SECRET not in repr(cfg) and "fff" not in repr(cfg) and "fff" not in str(cfg)


def test_secret_file_unreadable(tmp_path: Path) -> None:
    secret = tmp_path / "hs.key"
    secret.write_bytes(b"x" * 64)
    secret.chmod(0)
    text = "issuers:\n  - name: a\n    issuer: a\n    algorithms: [HS256]\n    secret: {file: hs.key}\n"
    if os.access(secret, os.R_OK):  # root reads anything: use a directory instead
        text = text.replace("hs.key", ".")
    issue = only_issue(text, base_dir=tmp_path)
    assert issue.path == "issuers[0].secret.file" and issue.line == 5
    assert "cannot read" in issue.message or "not a regular file" in issue.message


def test_secret_values_never_in_messages(tmp_path: Path) -> None:
    inline = "inline-secret-value-that-must-not-leak-0123456789"
    text = doc(f"""\
        issuers:
          - name: a
            issuer: a
            algorithms: [HS256]
            secret: "{inline}"
          - name: b
            issuer: b
            algorithms: [HS512]
            secret: {{env: B, value: "{inline}"}}
        """)
    found = issues(text, environ={"B": HS_SECRET})  # 45 bytes: too short for HS512
    text_out = "\n".join(str(i) for i in found) + repr(found)
    assert inline not in text_out and HS_SECRET not in text_out
    assert {i.path for i in found} == {"issuers[0].secret", "issuers[1].secret.value", "issuers[1].secret.env"}


def test_billion_laughs_is_one_issue() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 9):
        prev = f"*a{n - 1}"
        lines.append(f"a{n}: &a{n} [{', '.join([prev] * 10)}]")
    issue = only_issue("\n".join(lines) + "\n")
    assert issue.path == "" and "aliases are expanded" in issue.message


def test_oversized_document(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigInvalid) as info:
        load_config(big, environ={})
    assert "larger than" in str(info.value.issues[0])


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigInvalid) as info:
        load_config(tmp_path / "absent.yaml")
    (issue,) = info.value.issues
    assert issue.line is None and "cannot read config file" in issue.message


def test_issue_format() -> None:
    assert str(ConfigIssue("server.listen", 3, "bad", "gw.yaml")) == "gw.yaml:3: server.listen: bad"
    assert str(ConfigIssue("", None, "unreadable", "gw.yaml")) == "gw.yaml: unreadable"
    exc = ConfigInvalid([ConfigIssue("b", 9, "x"), ConfigIssue("a", 2, "y"), ConfigIssue("", None, "z")])
    assert [i.line for i in exc.issues] == [None, 2, 9]


def test_load_config_uses_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GW_TEST_SECRET", HS_SECRET)
    cfg_file = tmp_path / "gw.yaml"
    cfg_file.write_text("issuers:\n  - name: a\n    issuer: a\n    algorithms: [HS256]\n    secret: {env: GW_TEST_SECRET}\n")
    cfg: GatewayConfig = load_config(str(cfg_file))
    assert cfg.issuers[0].secret == Secret(HS_SECRET.encode())
