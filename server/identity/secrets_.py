"""Opaque bearer credentials with a typed prefix and a checksum.

Format (total 57 or 56 characters, depending on the prefix)::

    <prefix><secret><checksum>

    prefix    one of the TokenKind values: "trl_pat_", "trl_mu_", "trl_cs_", "trl_rt_",
              "trl_ac_". It tells a human, a log scrubber or a secret scanner what the
              string is, and lets parse() route it without a database lookup.
    secret    43 base62 characters [0-9A-Za-z]: 32 bytes from `secrets` (256 bits), read
              as a big-endian integer, written most significant digit first, left-padded
              with "0" to 43 digits (62**43 > 2**256).
    checksum  6 base62 characters, same alphabet and padding: CRC32 of the ASCII bytes of
              prefix + secret (62**6 > 2**32).

Example shape: ``trl_pat_`` + 43 characters + 6 characters.

The checksum is not a security feature (anyone can compute it); it lets parse() reject
typos, truncations and random strings before any database lookup. CRC32 detects every
single-character change of prefix + secret, and a change inside the checksum always
mismatches because the fixed-width encoding is one-to-one. Base62 keeps the token one
"word": a double-click selects all of it, and it needs no escaping in URLs or headers.

Only ``digest`` (SHA-256 of the whole token) is stored; the token itself is shown once.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import secrets
import string
import zlib
from dataclasses import dataclass, field

__all__ = [
    "IssuedToken",
    "ParsedToken",
    "TokenKind",
    "digest_of",
    "new_token",
    "parse",
]

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ALPHABET_SET = frozenset(_ALPHABET)
_SECRET_BYTES = 32
_SECRET_CHARS = 43  # smallest n with 62**n >= 2**256
_CHECKSUM_CHARS = 6  # smallest n with 62**n >= 2**32
_BODY_CHARS = _SECRET_CHARS + _CHECKSUM_CHARS
_HINT_CHARS = 4


class TokenKind(enum.Enum):
    """What a token is for; the value is its prefix."""

    PAT = "trl_pat_"  # personal access token
    MACHINE_USER = "trl_mu_"
    CLIENT_SECRET = "trl_cs_"  # OAuth client secret
    REFRESH = "trl_rt_"  # OAuth refresh token
    AUTH_CODE = "trl_ac_"  # OAuth authorization code

    @property
    def prefix(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly minted token. ``token`` is shown to its owner once and never stored."""

    kind: TokenKind
    # Kept out of repr so that logging the object cannot leak the credential.
    token: str = field(repr=False)
    digest: str
    hint: str


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A presented token that is well formed; look it up by ``digest``."""

    kind: TokenKind
    digest: str


def new_token(kind: TokenKind) -> IssuedToken:
    """Mint a new random token of ``kind``."""
    secret = _encode(int.from_bytes(secrets.token_bytes(_SECRET_BYTES), "big"), _SECRET_CHARS)
    token = kind.prefix + secret + _checksum(kind.prefix + secret)
    return IssuedToken(kind=kind, token=token, digest=digest_of(token), hint=_hint(kind, token))


def parse(token: str) -> ParsedToken | None:
    """Kind and digest of a presented token, or None if it cannot be one of ours.

    None for an unknown prefix, wrong length, characters outside base62 or a checksum that
    does not match. A None needs no database lookup; a ParsedToken still has to be found by
    its digest (and checked for expiry and revocation) by the caller.
    """
    kind = _kind_of(token)
    if kind is None:
        return None
    body = token[len(kind.prefix) :]
    if len(body) != _BODY_CHARS or not _ALPHABET_SET.issuperset(body):
        return None
    secret, checksum = body[:_SECRET_CHARS], body[_SECRET_CHARS:]
    # A plain comparison is fine: the checksum is derivable from the token, not a secret.
    if checksum != _checksum(kind.prefix + secret):
        return None
    return ParsedToken(kind=kind, digest=digest_of(token))


def digest_of(token: str) -> str:
    """SHA-256 hex digest of the whole token: the value stored and looked up.

    A fast, unsalted hash is right here, unlike for passwords: the token carries 256 bits
    of randomness, so there is no dictionary to try and brute force of the preimage is
    infeasible however fast the hash is. Salting or stretching would only make the lookup
    by digest impossible or slow. Looking up by digest also means the database index
    comparison can leak nothing useful about the token through timing.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """``(user, secret)`` of an ``Authorization: Basic base64(user:secret)``
    value (RFC 7617); None for another scheme or a malformed value."""
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    return (user, secret) if sep else None


def _kind_of(token: str) -> TokenKind | None:
    """The kind whose prefix ``token`` starts with (no prefix is a prefix of another)."""
    for kind in TokenKind:
        if token.startswith(kind.prefix):
            return kind
    return None


def _checksum(text: str) -> str:
    return _encode(zlib.crc32(text.encode("ascii")), _CHECKSUM_CHARS)


def _encode(value: int, width: int) -> str:
    """Fixed-width base62, most significant digit first, zero-padded."""
    digits = []
    for _ in range(width):
        value, remainder = divmod(value, 62)
        digits.append(_ALPHABET[remainder])
    if value:
        raise ValueError(f"value does not fit in {width} base62 digits")
    return "".join(reversed(digits))


def _hint(kind: TokenKind, token: str) -> str:
    """Non-secret label for listings, e.g. ``trl_pat_...a1B2``.

    The last four characters belong to the checksum: they reveal about 24 bits of a CRC of
    the secret, which still leaves over 230 bits to guess, so showing them is harmless.
    """
    return f"{kind.prefix}...{token[-_HINT_CHARS:]}"
