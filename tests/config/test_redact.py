"""The config view redacts by default: secrets, and anything a future block might hold that is not plain data."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config.model import Secret
from gateway.config.redact import REDACTED, redacted
from tests.config.helpers import ISSUER, parse


class PrivateKeyFile(Secret):
    """What a future block (decryption keys, a TLS key) might define: a Secret subclass."""


@dataclass(frozen=True)
class FutureBlock:
    name: str
    key_file: str
    key: PrivateKeyFile
    raw: bytes
    loaded: object
    jwks: dict[str, object]


def test_a_new_block_is_redacted_without_anyone_listing_its_fields() -> None:
    block = FutureBlock(
        name="jwe",
        key_file="/etc/gateway/jwe/keys.json",
        key=PrivateKeyFile(b"private"),
        raw=b"more private",
        loaded=ec.generate_private_key(ec.SECP256R1()),
        jwks={"keys": [{"kty": "EC", "crv": "P-256", "x": "X", "y": "Y", "d": "D"}, {"kty": "oct", "k": "K"}]},
    )
    assert redacted(block) == {
        "name": "jwe",
        "key_file": "/etc/gateway/jwe/keys.json",
        "key": REDACTED,
        "raw": REDACTED,
        "loaded": REDACTED,
        "jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "X", "y": "Y", "d": REDACTED}, {"kty": "oct", "k": REDACTED}]},
    }


def test_the_whole_config_is_plain_json_with_the_secret_redacted() -> None:
    text = ISSUER.replace("algorithms: [RS256]", "algorithms: [RS256, HS256]") + "    secret: {env: HS}\n"
    config = parse(text, environ={"HS": "s" * 40})
    view = redacted(config)
    assert view["issuers"][0]["secret"] == REDACTED
    assert view["issuers"][0]["jwks"]["location"] == "https://idp.example.com/jwks.json"
    assert view["server"]["listen"] == {"host": "0.0.0.0", "port": 8080}
    assert "s" * 40 not in repr(view)


def test_url_queries_are_redacted() -> None:
    assert redacted("https://idp/jwks?key=1") == f"https://idp/jwks?{REDACTED}"
    assert redacted("not a url?x") == "not a url?x"
