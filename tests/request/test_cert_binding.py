"""The binding check and the XFCC parser on their own: every header shape a front proxy (or an attacker) can send."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from gateway.cert_binding import certificate_thumbprint, check_certificate_binding, forwarded_thumbprint
from gateway.jose.errors import Reason, TokenError

DER = b"\x30\x82certificate bytes"
HEX = hashlib.sha256(DER).hexdigest()
THUMB = certificate_thumbprint(DER)


def test_thumbprint_is_unpadded_base64url_of_sha256() -> None:
    assert THUMB == base64.urlsafe_b64encode(hashlib.sha256(DER).digest()).decode().rstrip("=")
    assert "=" not in THUMB and len(THUMB) == 43


@pytest.mark.parametrize(
    "header",
    [
        f"Hash={HEX}",
        f"hash={HEX.upper()}",  # keys are case-insensitive; hex is hex
        f'By=spiffe://a/b;Hash={HEX};Subject="CN=x,O=a;b=c";URI=spiffe://c',
        f'Subject="quote \\" inside, and ; too";Hash={HEX}',
    ],
    ids=["bare", "case", "quoted_separators", "escaped_quote"],
)
def test_one_element_with_one_hash_is_read(header: str) -> None:
    assert forwarded_thumbprint([header]) == THUMB


@pytest.mark.parametrize(
    "values",
    [
        [],
        [f"Hash={HEX}", f"Hash={HEX}"],  # the header twice
        [f"Hash={HEX},Hash={HEX}"],  # two elements (two hops)
        [f"Hash={HEX};Hash={HEX}"],  # two hashes in one element
        [f'Subject="open quote;Hash={HEX}'],
        [f"Hash={HEX[:-2]}"],
        [f"Hash={HEX}00"],
        [f"Hash={'zz' * 32}"],
        ["Cert=abc;Subject=x"],
        [f"Hash={HEX};" + "x" * 20000],
    ],
    ids=["absent", "repeated", "two_elements", "two_hashes", "open_quote", "short", "long", "not_hex", "no_hash", "too_long"],
)
def test_anything_else_names_no_certificate(values: list[str]) -> None:
    assert forwarded_thumbprint(values) is None


def _check(claims: dict[str, Any], presented: str | None) -> None:
    check_certificate_binding(claims, lambda: presented)


def test_binding_checks() -> None:
    _check({"sub": "a"}, None)  # unbound
    _check({"cnf": {"jkt": "x"}}, None)  # another confirmation method: not ours to check
    _check({"cnf": {"x5t#S256": THUMB}}, THUMB)
    for presented in (None, THUMB[:-1] + "A", THUMB + "="):
        with pytest.raises(TokenError) as info:
            _check({"cnf": {"x5t#S256": THUMB}}, presented)
        assert info.value.reason is Reason.CERT_BINDING_MISMATCH


def test_certificate_is_looked_at_only_for_a_bound_token() -> None:
    def fail() -> str | None:
        raise AssertionError("asked for the certificate of an unbound token")

    check_certificate_binding({"cnf": {"jkt": "x"}}, fail)
    check_certificate_binding({}, fail)
