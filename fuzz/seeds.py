"""Write the seed corpora under fuzz/seeds/ (`python -m fuzz.seeds`): a few valid and a few hostile inputs per target.

Seeds are small on purpose: the fuzzer grows its own corpus in fuzz/.work/.
Signatures use the fixed test keys of fuzz.common, so seeds stay valid.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

from fuzz.common import AUDIENCE, ED_KEY, HS_SECRET, ISSUER, b64u, claims, ec_public_jwk, ed_public_jwk, json_bytes
from fuzz.edge import token as edge_token

HERE = Path(__file__).resolve().parent / "seeds"
ROOT = HERE.parent.parent


def _hs_token(header: dict[str, object], payload: dict[str, object]) -> str:
    signing_input = f"{b64u(json_bytes(header))}.{b64u(json_bytes(payload))}"
    return f"{signing_input}.{b64u(hmac.digest(HS_SECRET, signing_input.encode(), 'sha256'))}"


def _ed_token(payload: dict[str, object]) -> str:
    signing_input = f"{b64u(json_bytes({'alg': 'EdDSA', 'kid': 'ed-1'}))}.{b64u(json_bytes(payload))}"
    return f"{signing_input}.{b64u(ED_KEY.sign(signing_input.encode()))}"


def jws() -> list[bytes]:
    good = [_hs_token({"alg": "HS256", "typ": "JWT"}, claims()), _ed_token(claims(aud=[AUDIENCE, "x"]))]
    hostile = [
        _hs_token({"alg": "none"}, claims()),
        _hs_token({"alg": "HS256", "crit": ["exp"], "exp": 1}, claims()),
        _hs_token({"alg": "HS256", "kid": 7}, claims()),
        _hs_token({"alg": "HS256", "b64": False}, claims()),
        _hs_token({"alg": "HS256"}, claims(exp=1)),
        "e30.e30.",
    ]
    seeds = [b"\x00" + t.encode() for t in good + hostile]
    header = json_bytes({"alg": "ES256", "kid": "ec-1"})
    for alg_index, key_index in ((3, 2), (0, 0), (1, 1), (4, 3), (0, 1), (2, 1)):
        seeds.append(bytes([1, alg_index, key_index]) + header + b"\x00" + json_bytes(claims()))
    return seeds


def jwk() -> list[bytes]:
    ec, ed = ec_public_jwk(), ed_public_jwk()
    docs = [
        {"keys": [ec, ed]},
        {"keys": [{**ec, "use": "enc"}, {**ed, "key_ops": ["sign"]}, {**ec, "alg": "ES384"}]},
        {"keys": [{**ec, "d": "AAAA"}, {"kty": "oct", "k": b64u(HS_SECRET)}]},
        {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}, {"kty": "EC", "crv": "P-384", "x": ec["x"], "y": ec["y"]}]},
        {"keys": "nope"},
    ]
    return [bytes([flag]) + json_bytes(doc) for doc in docs for flag in (0, 1)][:8]


def config() -> list[bytes]:
    from fuzz.edge import CONFIG

    edge = CONFIG.format(port=8000, issuer=ISSUER, audience=AUDIENCE, jwks=json.dumps({"keys": [ec_public_jwk()]}))
    secret = (
        "upstream: {url: 'http://127.0.0.1:8000'}\n"
        "issuers:\n  - name: hs\n    issuer: legacy\n    algorithms: [HS256]\n    secret: {env: HS_SECRET}\n"
        "  - name: f\n    issuer: x\n    secret: {file: hs-secret}\n"
        "routes:\n  - name: all\n    match: {prefix: /}\n"
    )
    return [
        (ROOT / "config" / "gateway.yaml").read_bytes(),
        (ROOT / "tests" / "config" / "data" / "three_errors.yaml").read_bytes(),
        edge.encode(),
        secret.encode(),
        b"a: &x [*x]\n",
        b"server: {listen: ':80', listen: ':81'}\n",
    ]


def path() -> list[bytes]:
    raw = ["/", "/a/b/../c", "/%2e%2E/admin", "//x///y/.", "/a;b", "/%41%62%c3%a9", "/a/%2F", "/~%7e/..%2f", "/\xe9", "/a/b/.."]
    return [bytes([i % 2]) + p.encode("utf-8") for i, p in enumerate(raw)]


def extract() -> list[bytes]:
    tok = _hs_token({"alg": "HS256"}, claims()).encode()
    return [
        b"\x01\x00Bearer " + tok + b"\x00",
        b"\x01\x02a=1; access_token=" + tok + b"; b=2\x00",
        b"\x00access_token=" + tok + b"&x=1",
        b"\x02\x00Bearer " + tok + b"\x00\x02access_token=" + tok + b"\x00",
        b"\x02\x00Bearer a\x00\x01bearer b\x00",
        b"\x01\x00Basic dXNlcjpwYXNz\x00access_token=&access_token=x",
        b"\x01\x00Bearer  a=b\x00%61ccess_token=y",
    ]


def edge() -> list[bytes]:
    good = edge_token()
    expired = edge_token(exp=1000)
    return [
        b"GET /public/x HTTP/1.1\r\nHost: a\r\n\r\n",
        f"GET /private/a HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {good}\r\n\r\n".encode(),
        f"GET /private/a?access_token={expired} HTTP/1.1\r\nHost: a\r\n\r\n".encode(),
        f"POST /opt/%2e%2e/private HTTP/1.1\r\nHost: a\r\nCookie: access_token={good}\r\nContent-Length: 5\r\n\r\nhello".encode(),
        f"POST /private HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {good}\r\nTransfer-Encoding: chunked\r\n"
        "Expect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode(),
        b"GET /private HTTP/1.1\r\nHost: a\r\nX-User-Id: mallory\r\n\r\nGET /public HTTP/1.1\r\n\r\n",
        f"GET /private/ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {good}\r\n\r\n".encode(),
        b"GET /a;b HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 3000 + b"\r\n\r\n",
    ]


def jwe() -> list[bytes]:
    from fuzz.jwe import _encrypt

    inner = _hs_token({"alg": "HS256"}, claims()).encode()
    made = [bytes([1, a, e]) + inner for a, e in ((0, 0), (1, 1), (2, 0), (2, 1))]
    ready = [_encrypt("ECDH-ES", "A256GCM", inner), _encrypt("A256KW", "A128CBC-HS256", inner)]
    head, ek, iv, ct, tag = ready[1].split(".")
    hostile = [
        ready[1][:-2] + ("AA" if not ready[1].endswith("AA") else "AB"),  # tag changed
        f"{b64u(json_bytes({'alg': 'A256KW', 'enc': 'A128CBC-HS256', 'zip': 'DEF', 'cty': 'JWT'}))}.{ek}.{iv}.{ct}.{tag}",
        f"{b64u(json_bytes({'alg': 'A256KW', 'enc': 'A128CBC-HS256'}))}.{ek}.{iv}.{ct}.{tag}",
        f"{head}.{ek}.{iv}.{ct}",
    ]
    return made + [b"\x00" + t.encode() for t in ready + hostile] + [b"\x01\x00\x00not.a.jws.at.all"]


def main() -> None:
    makers = {"jws": jws, "jwk": jwk, "config": config, "path": path, "extract": extract, "edge": edge, "jwe": jwe}
    for name, make in makers.items():
        folder = HERE / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for seed in make():
            (folder / hashlib.sha256(seed).hexdigest()[:40]).write_bytes(seed)


if __name__ == "__main__":
    main()
