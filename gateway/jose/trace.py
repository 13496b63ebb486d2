"""What the verification steps checked, recorded for `gateway explain` (the request path records nothing).

The steps that decide about a token take an optional `Trace`; when one is given
they add one `Check` per check they make, in the order they make it, with the
value and the limit compared, then go on (or raise) exactly as without it. So
explain renders the gateway's own decisions instead of re-implementing them.
Details may quote the token's header and claims (explain prints them anyway),
never its signature, a key or a secret; a trace is never logged.

Steps, in the order a token meets them; a new layer records under its own step
name and explain shows it in this order (JWE decryption comes before the JWS
checks, sender binding such as DPoP or mTLS after the claims):
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

ROUTE: Final = "route"
DECRYPTION: Final = "decryption"  # reserved: the JWE layer (RFC 7516) records here
DECODE: Final = "decode"
ISSUER: Final = "issuer"
KEY: Final = "key"
SIGNATURE: Final = "signature"
CLAIMS: Final = "claims"
BINDING: Final = "binding"  # reserved: DPoP (RFC 9449) and certificate binding (RFC 8705) record here
RULES: Final = "claim rules"
STEP_ORDER: Final = (ROUTE, DECRYPTION, DECODE, ISSUER, KEY, SIGNATURE, CLAIMS, BINDING, RULES)


@dataclass(frozen=True, slots=True)
class Check:
    step: str  # one of STEP_ORDER
    name: str  # what was checked: "alg allow-list", "exp", ...
    ok: bool | None  # None: not a check the token failed, only context (an issuer it does not name)
    detail: str  # the value and the limit, e.g. "exp 1700000000 > now 1699999000 - skew 30"


@dataclass(slots=True)
class Trace:
    checks: list[Check] = field(default_factory=list)

    def add(self, step: str, name: str, ok: bool | None, detail: str = "") -> None:
        self.checks.append(Check(step, name, ok, detail))
