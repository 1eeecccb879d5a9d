"""Short-lived access tokens (JWT) signed with rotating ES256 keys.

Access tokens are self-contained: a service verifies one with a public key and no database
round trip. That makes them fast, and it also means a leaked signing key forges any identity.
This module's job is to keep that surface small and boring:

* One algorithm, ES256 (ECDSA over P-256 with SHA-256), pinned on verification. The token
  header is only consulted to pick a key by ``kid``; it never chooses the algorithm, which
  shuts out ``alg: none`` and the HS256-with-the-public-key confusion attack.
* Keys rotate. A :class:`KeyRing` holds one ``active`` key (signs and verifies), any number of
  ``verifying`` keys (verify only, kept after a rotation until every token they signed has
  expired) and ``retired`` keys (rejected outright).
* Every verification failure is one exception, :class:`InvalidToken`, whose ``reason`` is short
  and safe to send to a client. Library messages never leak through it.

Persistence is the caller's business: :meth:`SigningKey.to_dict` / :meth:`SigningKey.from_dict`
turn a key into a plain dict (private key as a PKCS#8 PEM string) for a database row, and
:attr:`KeyRing.keys` gives the snapshot to write back after :meth:`KeyRing.rotate` or
:meth:`KeyRing.retire`.
"""

from trellis.server.identity._jwt_tokens import TOKEN_TYPE_HEADER, Claims, IssuedJwt, TokenIssuer
from trellis.server.identity._signing_keys import (
    ALGORITHM,
    CLOCK_SKEW_LEEWAY_SECS,
    InvalidToken,
    KeyRing,
    KeyState,
    SigningKey,
)

__all__ = [
    "ALGORITHM",
    "CLOCK_SKEW_LEEWAY_SECS",
    "TOKEN_TYPE_HEADER",
    "Claims",
    "InvalidToken",
    "IssuedJwt",
    "KeyRing",
    "KeyState",
    "SigningKey",
    "TokenIssuer",
]
