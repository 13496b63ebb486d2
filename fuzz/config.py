"""Fuzz the config loader: a YAML document yields a model, or every error with its line, never a crash.

Input: the bytes as a config file (UTF-8, replacement for bad bytes), parsed with a
base directory that holds a valid `jwks.json` and a secret file, and an environment
with one secret variable, so file and env references can resolve.

Invariants: `parse_config` returns a GatewayConfig or raises ConfigInvalid (nothing
else); ConfigInvalid lists at least one issue, each with a line inside the document;
no issue echoes the secret's value; a returned model is consistent (routes name
known issuers, min_refresh_interval <= refresh_interval, unique route names).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from fuzz.common import ec_public_jwk
from gateway.config.errors import ConfigInvalid
from gateway.config.load import parse_config
from gateway.config.model import GatewayConfig

_YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
SECRET = "fuzz-env-secret-value-0123456789abcdef-XYZ"
ENVIRON = {"HS_SECRET": SECRET}
_BASE = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
(_BASE / "jwks.json").write_text(json.dumps({"keys": [ec_public_jwk()]}))
(_BASE / "hs-secret").write_text(SECRET + "\n")


def check(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        config = parse_config(text, source="fuzz.yaml", base_dir=_BASE, environ=ENVIRON)
    except ConfigInvalid as exc:
        assert exc.issues, "ConfigInvalid without an issue"
        # Lines as YAML counts them (a lone CR, NEL, LS and PS break lines too, YAML 1.1 §5.4);
        # a problem at the end of the stream may name the line after the last.
        last_line = len(_YAML_BREAK.findall(text)) + 2
        for issue in exc.issues:
            assert issue.line is not None, f"an issue without a line: {issue.path}: {issue.message}"
            assert 1 <= issue.line <= last_line, f"issue line {issue.line} outside the document"
            assert SECRET not in str(issue), "an issue echoes the secret"
        return
    _check_model(config)


def _check_model(config: GatewayConfig) -> None:
    names = {issuer.name for issuer in config.issuers}
    assert len(names) == len(config.issuers), "two issuers with one name"
    for issuer in config.issuers:
        if issuer.jwks is not None:
            assert issuer.jwks.min_refresh_interval <= issuer.jwks.refresh_interval
    routes = [route.name for route in config.routes]
    assert len(set(routes)) == len(routes), "two routes with one name"
    for route in config.routes:
        assert route.issuers is None or set(route.issuers) <= names, "a route names an unknown issuer"
