"""The closed vocabulary of token rejections: metric label, log field and 401 description key."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # Values are stable: they are Prometheus label values and log fields.
    MALFORMED = "malformed"  # not a compact JWS / not JSON objects / bad types
    TOO_LARGE = "too_large"  # over a size cap, checked before decoding
    ALG_NOT_ALLOWED = "alg_not_allowed"  # alg not in allow-list, `none`, or unfit for the key
    UNSUPPORTED_CRIT = "unsupported_crit"  # crit names an extension we do not understand (RFC 7515 §4.1.11)
    BAD_TYPE = "bad_type"  # typ not allowed (RFC 8725 §3.11)
    UNKNOWN_KEY = "unknown_key"  # no key for kid / none fits alg
    BAD_SIGNATURE = "bad_signature"
    BAD_ISSUER = "bad_issuer"  # iss missing or not configured
    BAD_AUDIENCE = "bad_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"  # nbf or iat beyond clock skew in the future
    MISSING_EXPIRATION = "missing_expiration"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    JWKS_UNAVAILABLE = "jwks_unavailable"  # the issuer has no keys yet (503)
    CERT_BINDING_MISMATCH = "cert_binding_mismatch"  # cnf x5t#S256 not this connection's certificate (RFC 8705 §3)
    DECRYPT_FAILED = "decrypt_failed"  # any JWE fault after its header parsed: one reason, no oracle
    ENCRYPTION_REQUIRED = "encryption_required"  # a plain JWS from an issuer that must encrypt


# SPEC Part 2: every decryption failure carries this one sentence, whatever went wrong.
DECRYPT_FAILED_DESCRIPTION = "The encrypted token could not be decrypted."


class TokenError(Exception):
    """A rejection: `reason` is machine-readable; `description` is a safe sentence
    that never contains the token, a key or a claim value."""

    __slots__ = ("description", "reason")

    def __init__(self, reason: Reason, description: str) -> None:
        # No message is formatted here: a flood of forged tokens raises one per request,
        # and the text is wanted only when something prints the error.
        self.reason = reason
        self.description = description

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.description}"
