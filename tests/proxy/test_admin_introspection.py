"""Admin GET /config and GET /keys: what the running process knows, never a secret, key material or token."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from tests.proxy.conftest import BASE_CONFIG, GatewayFactory, admin_url, url
from tests.proxy.harness import Issuer, ec_jwk

HS_SECRET = "hs-secret-value-0123456789-abcdefghij"
OCT_K = "b2N0LWtleS1tYXRlcmlhbC10aGF0LW11c3Qtbm90LWxlYWs"
QUERY_SECRET = "query-api-key-42"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

EXTRA_ISSUERS = """\
  - name: shared
    issuer: "https://hs.example/"
    algorithms: [HS256]
    secret: {{file: hs.secret}}
  - name: inline
    issuer: "https://inline.example/"
    algorithms: [ES256]
    jwks:
      inline: {inline}
  - name: remote
    issuer: "https://remote.example/"
    algorithms: [RS256]
    jwks:
      uri: "{issuer_url}jwks.json?api_key={query_secret}"
      allow_http: true
"""


def _config(tmp_path: Path) -> str:
    (tmp_path / "hs.secret").write_text(HS_SECRET + "\n")
    inline = {"keys": [ec_jwk(ec.generate_private_key(ec.SECP256R1()), "inline-ec"), {"kty": "oct", "kid": "sym", "k": OCT_K}]}
    extra = EXTRA_ISSUERS.replace("{inline}", json.dumps(inline).replace("{", "{{").replace("}", "}}"))
    return BASE_CONFIG.replace("forward:\n", extra + "forward:\n", 1)


def _private_members(value: Any) -> list[str]:
    """Every JWK private/symmetric member anywhere in a JSON value that is not redacted."""
    if isinstance(value, dict):
        found = [k for k, v in value.items() if k in PRIVATE_MEMBERS and v != "<redacted>"]
        return found + [m for v in value.values() for m in _private_members(v)]
    if isinstance(value, list):
        return [m for v in value for m in _private_members(v)]
    return []


async def _get(http: aiohttp.ClientSession, address: str) -> tuple[str, dict[str, Any]]:
    async with http.get(address) as resp:
        assert resp.status == 200
        assert resp.headers["Server"] == "gateway"
        text = await resp.text()
    return text, json.loads(text)


async def test_config_and_keys_show_what_the_process_knows_and_no_secret(
    tmp_path: Path, make_gateway: GatewayFactory, issuer: Issuer, http: aiohttp.ClientSession
) -> None:
    issuer.etag = True
    gateway = await make_gateway(_config(tmp_path), query_secret=QUERY_SECRET)
    token = issuer.token()
    async with http.get(url(gateway, "/api/x"), headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 200

    text, body = await _get(http, admin_url(gateway, "/config"))
    assert body["file"] == gateway.config_path
    assert body["sha256"] == hashlib.sha256(Path(str(gateway.config_path)).read_bytes()).hexdigest()
    assert RFC3339_UTC.fullmatch(body["loaded_at"])
    config = body["config"]
    assert config["server"]["max_token_bytes"] == 4096 and config["server"]["log_level"] == "info"
    issuers = {i["name"]: i for i in config["issuers"]}
    assert issuers["shared"]["secret"] == "<redacted>"
    assert issuers["inline"]["jwks"]["inline"]["keys"][1] == {"kty": "oct", "kid": "sym", "k": "<redacted>"}
    assert issuers["remote"]["jwks"]["location"] == f"{issuer.url}jwks.json?<redacted>"
    assert [r["name"] for r in config["routes"]] == ["public", "optional", "admin", "ws", "api", "upstream-misc"]

    keys_text, keys = await _get(http, admin_url(gateway, "/keys"))
    by_name = {i["issuer"]: i for i in keys["issuers"]}
    corp = by_name["corp"]
    assert (corp["source"], corp["location"], corp["ready"]) == ("uri", f"{issuer.url}jwks.json", True)
    assert corp["keys"] == [
        {"kid": "rsa-1", "kty": "RSA", "alg": "RS256", "crv": None, "use": "sig"},
        {"kid": "ec-1", "kty": "EC", "alg": None, "crv": "P-256", "use": None},
    ]
    assert corp["last_fetch"]["result"] == "ok" and RFC3339_UTC.fullmatch(corp["last_fetch"]["at"])
    assert RFC3339_UTC.fullmatch(corp["next_refresh"])
    assert corp["etag"] is not None and corp["etag"].startswith('"')
    assert by_name["shared"]["source"] is None and by_name["shared"]["secret"] is True and by_name["shared"]["keys"] == []
    inline = by_name["inline"]
    assert [k["kid"] for k in inline["keys"]] == ["inline-ec"] and inline["next_refresh"] is None
    assert any("oct" in message for message in inline["skipped"])
    assert by_name["remote"]["location"] == f"{issuer.url}jwks.json?<redacted>"

    for shown in (text, keys_text):
        for secret in (HS_SECRET, OCT_K, QUERY_SECRET, *token.split(".")):
            assert secret not in shown
    assert _private_members(body) == [] and _private_members(keys) == []
