"""issuers[].dpop, server.public_origin and server.trusted_proxies: values as read, and each error with its line."""

from __future__ import annotations

import pytest

from gateway.config.model import DpopConfig
from tests.config.helpers import ISSUER, marked_line, only_issue, parse


def test_dpop_defaults_to_off() -> None:
    assert parse(ISSUER).issuers[0].dpop == DpopConfig(mode="off")


@pytest.mark.parametrize("mode, expect", [("off", "off"), ('"off"', "off"), ("false", "off"), ("optional", "optional"),
                                          ("required", "required")])
def test_dpop_block_as_read(mode: str, expect: str) -> None:
    cfg = parse(ISSUER + f"    dpop: {{mode: {mode}, algorithms: [ES256, EdDSA], max_age: 30s, nonce: true}}\n"
                "server:\n  public_origin: 'HTTPS://Api.Example.com:443'\n  trusted_proxies: [10.0.0.0/8, '::1']\n")
    assert cfg.issuers[0].dpop == DpopConfig(mode=expect, algorithms=("ES256", "EdDSA"), max_age=30.0, nonce=True)  # type: ignore[arg-type]
    assert cfg.server.public_origin == ("https", "api.example.com")
    assert cfg.server.trusted_proxies == ("10.0.0.0/8", "::1")


@pytest.mark.parametrize(
    "text, path, fragment",
    [
        (ISSUER + "    dpop: {mode: on}  # <-\n", "issuers[0].dpop.mode", "must be a string"),
        (ISSUER + "    dpop: {mode: strict}  # <-\n", "issuers[0].dpop.mode", "not one of off, optional, required"),
        (ISSUER + "    dpop: {algorithms: [HS256]}  # <-\n", "issuers[0].dpop.algorithms[0]", "asymmetric algorithms only"),
        (ISSUER + "    dpop: {algorithms: [none]}  # <-\n", "issuers[0].dpop.algorithms[0]", "cannot sign a DPoP proof"),
        (ISSUER + "    dpop: {max_age: 0s}  # <-\n", "issuers[0].dpop.max_age", "greater than 0"),
        (ISSUER + "    dpop: {nonce: yes please}  # <-\n", "issuers[0].dpop.nonce", "true or false"),
        (ISSUER + "    dpop: {mod: optional}  # <-\n", "issuers[0].dpop.mod", "did you mean 'mode'"),
        ("server:\n  public_origin: 'https://api.example.com/v1'  # <-\n", "server.public_origin", "is not an origin"),
        ("server:\n  public_origin: 'ftp://api.example.com'  # <-\n", "server.public_origin", "is not an origin"),
        ("server:\n  trusted_proxies: [10.0.0.0/33]  # <-\n", "server.trusted_proxies[0]", "not an IP address or CIDR"),
    ],
)
def test_dpop_errors(text: str, path: str, fragment: str) -> None:
    issue = only_issue(text)
    assert (issue.path, issue.line) == (path, marked_line(text))
    assert fragment in issue.message
