"""Signing and verifying access tokens with a key ring (see ``jwt_keys``)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import jwt

from trellis.server.identity._signing_keys import (
    ALGORITHM,
    CLOCK_SKEW_LEEWAY_SECS,
    InvalidToken,
    KeyRing,
    KeyState,
    SigningKey,
    _now,
)

TOKEN_TYPE_HEADER: Final = "at+jwt"
"""The ``typ`` header of an access token (RFC 9068 section 2.1)."""

# RFC 9068 section 4 lets the typ header carry the full media type too; media types compare
# case-insensitively. Anything else (notably plain "JWT", e.g. an ID token) is a different kind
# of token that must not be accepted as an access token.
_ACCEPTED_TYP: Final = frozenset({TOKEN_TYPE_HEADER, f"application/{TOKEN_TYPE_HEADER}"})

# A real access token is well under 2 KiB; refusing absurd inputs before base64/JSON decoding
# keeps a junk Authorization header from costing more than a length check.
_MAX_TOKEN_CHARS: Final = 8192

# Claims every token must carry. PyJWT checks presence; types and time windows are checked here.
_REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "org", "jti", "token_type", "iat", "nbf", "exp")

# Claims set by TokenIssuer itself; `extra` may not override them, or a caller could, say,
# stretch `exp` or change `sub` behind the issuer's back.
_RESERVED_CLAIMS: Final = frozenset(
    {*_REQUIRED_CLAIMS, "scope", "sid", "client_id", "kid", "typ", "alg"}
)


@dataclass(frozen=True)
class IssuedJwt:
    """A freshly signed token and the facts a caller needs to hand it out or revoke it."""

    token: str
    jti: str
    expires_at: int


@dataclass(frozen=True)
class Claims:
    """The verified contents of an access token."""

    subject: str
    org: str
    scopes: tuple[str, ...]
    jti: str
    session_id: str | None
    token_type: str
    expires_at: int
    # The full verified payload, for custom claims. Excluded from eq/hash: dicts are unhashable.
    raw: dict[str, Any] = field(compare=False, repr=False)


class TokenIssuer:
    """Signs and verifies access tokens for one issuer/audience pair with a :class:`KeyRing`."""

    def __init__(self, ring: KeyRing, issuer: str, audience: str, ttl_secs: int) -> None:
        if not issuer or not audience:
            raise ValueError("issuer and audience must be non-empty")
        if ttl_secs <= 0:
            raise ValueError("ttl_secs must be positive")
        self._ring = ring
        self._issuer = issuer
        self._audience = audience
        self._ttl_secs = ttl_secs

    @property
    def ttl_secs(self) -> int:
        return self._ttl_secs

    def issue(
        self,
        *,
        subject: str,
        org: str,
        scopes: Sequence[str],
        token_type: str = "access",
        session_id: str | None = None,
        extra: Mapping[str, object] | None = None,
        now: float | None = None,
    ) -> IssuedJwt:
        """Sign a token with the ring's active key, valid from ``now`` for ``ttl_secs``."""
        if not subject or not org or not token_type or session_id == "":
            raise ValueError("subject, org, token_type and session_id must be non-empty")
        payload: dict[str, Any] = dict(_checked_extra(extra))
        issued_at = int(_now(now))
        expires_at = issued_at + self._ttl_secs
        jti = secrets.token_urlsafe(16)
        payload.update(
            iss=self._issuer,
            aud=self._audience,
            sub=subject,
            org=org,
            scope=_join_scopes(scopes),
            token_type=token_type,
            iat=issued_at,
            nbf=issued_at,
            exp=expires_at,
            jti=jti,
        )
        if session_id is not None:
            payload["sid"] = session_id
        key = self._ring.active
        token = jwt.encode(
            payload,
            key.private_key,
            algorithm=ALGORITHM,
            headers={"typ": TOKEN_TYPE_HEADER, "kid": key.kid},
        )
        return IssuedJwt(token=token, jti=jti, expires_at=expires_at)

    def verify(self, token: str, *, now: float | None = None) -> Claims:
        """Verify signature, header and claims; raise :class:`InvalidToken` on any failure."""
        key = self._key_for(token)
        decoded = self._decode(token, key)
        _check_typ(decoded["header"])
        payload: dict[str, Any] = decoded["payload"]
        expires_at = _check_time_window(payload, _now(now))
        return _claims_from_payload(payload, expires_at)

    def _key_for(self, token: str) -> SigningKey:
        """Pick the verification key by ``kid``. The unverified header is used for nothing else."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("missing signing key id")
        key = self._ring.get(kid)
        if key is None:
            raise InvalidToken("unknown signing key")
        if key.state is KeyState.RETIRED:
            raise InvalidToken("signing key retired")
        return key

    def _decode(self, token: str, key: SigningKey) -> dict[str, Any]:
        """Signature, algorithm pin, iss/aud and claim presence, via PyJWT.

        Time claims are only required here, not checked: PyJWT reads the wall clock, and this
        class takes ``now`` so that callers (and tests) control time. They are checked after.
        """
        try:
            return jwt.decode_complete(
                token,
                key.public_key,  # a key object, never bytes: HMAC cannot use it as a secret
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": list(_REQUIRED_CLAIMS),
                    "verify_signature": True,
                    "verify_aud": True,
                    "strict_aud": True,  # aud must be exactly our audience, not a list holding it
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason_for(exc)) from None


def _reason_for(exc: jwt.PyJWTError) -> str:
    """Map a PyJWT error to a client-safe reason. Library messages are never passed through."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing required claim: {exc.claim}"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "unsupported algorithm"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "invalid signature"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "invalid audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "invalid issuer"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"


def _check_typ(header: Mapping[str, Any]) -> None:
    """Require the access-token ``typ`` so other JWTs we might sign (ID tokens...) don't pass."""
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
        raise InvalidToken("invalid token type")


def _numeric_date(payload: Mapping[str, Any], name: str) -> float:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"invalid claim: {name}")
    return float(value)


def _check_time_window(payload: Mapping[str, Any], now: float) -> int:
    """Check exp, nbf and iat against ``now`` with leeway; return exp as epoch seconds."""
    exp = _numeric_date(payload, "exp")
    nbf = _numeric_date(payload, "nbf")
    iat = _numeric_date(payload, "iat")
    if now >= exp + CLOCK_SKEW_LEEWAY_SECS:
        raise InvalidToken("token expired")
    if now + CLOCK_SKEW_LEEWAY_SECS < nbf:
        raise InvalidToken("token not yet valid")
    # A token "issued" in the future came from a badly skewed clock or was minted to outlive
    # its apparent lifetime; either way it is not one of ours to trust.
    if now + CLOCK_SKEW_LEEWAY_SECS < iat:
        raise InvalidToken("token issued in the future")
    return int(exp)


def _string_claim(payload: Mapping[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"invalid claim: {name}")
    return value


def _claims_from_payload(payload: dict[str, Any], expires_at: int) -> Claims:
    scope = payload.get("scope", "")
    if not isinstance(scope, str):
        raise InvalidToken("invalid claim: scope")
    session_id = payload.get("sid")
    if session_id is not None and not isinstance(session_id, str):
        raise InvalidToken("invalid claim: sid")
    return Claims(
        subject=_string_claim(payload, "sub"),
        org=_string_claim(payload, "org"),
        scopes=tuple(scope.split()),
        jti=_string_claim(payload, "jti"),
        session_id=session_id,
        token_type=_string_claim(payload, "token_type"),
        expires_at=expires_at,
        raw=dict(payload),
    )


def _join_scopes(scopes: Sequence[str]) -> str:
    """OAuth ``scope``: space-separated (RFC 6749 3.3), so a scope cannot contain whitespace."""
    if isinstance(scopes, str):
        # A bare string is a Sequence[str] too; "runs:read" would become "r u n s ...".
        raise TypeError("scopes must be a sequence of scope strings, not a single string")
    for scope in scopes:
        if not scope or any(ch.isspace() for ch in scope):
            raise ValueError(f"invalid scope: {scope!r}")
    return " ".join(dict.fromkeys(scopes))  # dedupe, keep order


def _checked_extra(extra: Mapping[str, object] | None) -> Mapping[str, object]:
    if not extra:
        return {}
    clashes = sorted(_RESERVED_CLAIMS.intersection(extra))
    if clashes:
        raise ValueError(f"extra claims may not override reserved claims: {clashes}")
    return extra
