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

from __future__ import annotations

import base64
import dataclasses
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

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

ALGORITHM: Final = "ES256"
"""The only JWS algorithm this module signs with or accepts."""

TOKEN_TYPE_HEADER: Final = "at+jwt"
"""The ``typ`` header of an access token (RFC 9068 section 2.1)."""

# RFC 9068 section 4 lets the typ header carry the full media type too; media types compare
# case-insensitively. Anything else (notably plain "JWT", e.g. an ID token) is a different kind
# of token that must not be accepted as an access token.
_ACCEPTED_TYP: Final = frozenset({TOKEN_TYPE_HEADER, f"application/{TOKEN_TYPE_HEADER}"})

CLOCK_SKEW_LEEWAY_SECS: Final = 30
"""Tolerance applied to ``exp``, ``nbf`` and ``iat``.

Issuing and verifying hosts never agree on the time to the second; 30 s absorbs ordinary NTP
drift while staying small next to an access token's lifetime (minutes).
"""

# A real access token is well under 2 KiB; refusing absurd inputs before base64/JSON decoding
# keeps a junk Authorization header from costing more than a length check.
_MAX_TOKEN_CHARS: Final = 8192

_CURVE_NAME: Final = "secp256r1"
_COORDINATE_BYTES: Final = 32  # P-256 field elements are 256 bits.

# Claims every token must carry. PyJWT checks presence; types and time windows are checked here.
_REQUIRED_CLAIMS: Final = ("iss", "aud", "sub", "org", "jti", "token_type", "iat", "nbf", "exp")

# Claims set by TokenIssuer itself; `extra` may not override them, or a caller could, say,
# stretch `exp` or change `sub` behind the issuer's back.
_RESERVED_CLAIMS: Final = frozenset(
    {*_REQUIRED_CLAIMS, "scope", "sid", "client_id", "kid", "typ", "alg"}
)


class InvalidToken(Exception):
    """A token was rejected. ``reason`` is short and safe to show to a client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyState(StrEnum):
    """Lifecycle of a signing key. Only moves forward: active -> verifying -> retired."""

    ACTIVE = "active"
    VERIFYING = "verifying"
    RETIRED = "retired"


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _b64url_uint(value: int) -> str:
    """Base64url (no padding) of a fixed-width big-endian P-256 coordinate (RFC 7518 6.2.1.2)."""
    raw = value.to_bytes(_COORDINATE_BYTES, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    """One ES256 key pair plus its lifecycle metadata.

    Immutable: state changes produce a new instance, so a key handed out by a :class:`KeyRing`
    can be used without holding the ring's lock. Equality ignores the key material (``kid`` is
    random and identifies the key) because cryptography key objects compare by identity.
    """

    kid: str
    state: KeyState
    created_at: float
    private_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)
    # When the key stopped signing; the retirement clock for a `verifying` key starts here.
    rotated_at: float | None = None

    def __post_init__(self) -> None:
        if not self.kid:
            raise ValueError("kid must be a non-empty string")
        if self.private_key.curve.name != _CURVE_NAME:
            raise ValueError("signing keys must be on the P-256 curve")

    @classmethod
    def generate(cls, *, now: float | None = None) -> SigningKey:
        """A fresh active key with a random URL-safe ``kid``."""
        return cls(
            kid=secrets.token_urlsafe(12),
            state=KeyState.ACTIVE,
            created_at=_now(now),
            private_key=ec.generate_private_key(ec.SECP256R1()),
        )

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, str]:
        """The public half as a JWK (RFC 7517/7518). Never contains the private scalar ``d``."""
        numbers = self.public_key.public_numbers()
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url_uint(numbers.x),
            "y": _b64url_uint(numbers.y),
            "kid": self.kid,
            "use": "sig",
            "alg": ALGORITHM,
        }

    def to_dict(self) -> dict[str, object]:
        """A JSON-compatible dict for a database row. Contains the PRIVATE key: store it as such."""
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "kid": self.kid,
            "alg": ALGORITHM,
            "state": self.state.value,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
            "private_key_pem": pem.decode("ascii"),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SigningKey:
        """Inverse of :meth:`to_dict`. Raises ``ValueError`` on anything malformed."""
        kid, alg, pem = data.get("kid"), data.get("alg"), data.get("private_key_pem")
        if not isinstance(kid, str):
            raise ValueError("kid must be a string")
        if alg != ALGORITHM:
            raise ValueError(f"unsupported key algorithm: {alg!r}")
        if not isinstance(pem, str):
            raise ValueError("private_key_pem must be a string")
        try:
            private_key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, TypeError, UnicodeEncodeError, UnsupportedAlgorithm) as exc:
            raise ValueError("private_key_pem is not an unencrypted PKCS#8 PEM key") from exc
        if not isinstance(private_key, ec.EllipticCurvePrivateKey):
            raise ValueError("private_key_pem is not an EC key")
        state = data.get("state")
        if not isinstance(state, str) or state not in {s.value for s in KeyState}:
            raise ValueError(f"unknown key state: {state!r}")
        return cls(
            kid=kid,
            state=KeyState(state),
            created_at=_as_timestamp(data.get("created_at"), "created_at"),
            rotated_at=(
                None
                if data.get("rotated_at") is None
                else _as_timestamp(data.get("rotated_at"), "rotated_at")
            ),
            private_key=private_key,
        )


def _as_timestamp(value: object, name: str) -> float:
    # bool is an int subclass; True is not a timestamp.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of epoch seconds")
    return float(value)


class KeyRing:
    """The set of signing keys, with exactly one ``active`` key. Thread-safe.

    All mutation happens under one lock and replaces :class:`SigningKey` instances instead of
    mutating them, so readers get consistent snapshots.
    """

    def __init__(self, keys: Iterable[SigningKey]) -> None:
        by_kid: dict[str, SigningKey] = {}
        for key in keys:
            if key.kid in by_kid:
                raise ValueError(f"duplicate kid: {key.kid!r}")
            by_kid[key.kid] = key
        active = [k for k in by_kid.values() if k.state is KeyState.ACTIVE]
        # Zero active keys means nothing can sign; two would make the signer ambiguous.
        if len(active) != 1:
            raise ValueError(f"a key ring needs exactly one active key, got {len(active)}")
        self._lock = threading.Lock()
        self._keys = by_kid
        self._active_kid = active[0].kid

    @classmethod
    def generate(cls, *, now: float | None = None) -> KeyRing:
        """A ring holding a single freshly generated active key."""
        return cls([SigningKey.generate(now=now)])

    @property
    def active(self) -> SigningKey:
        """The key new tokens are signed with."""
        with self._lock:
            return self._keys[self._active_kid]

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        """Every key, retired ones included: the snapshot a caller persists."""
        with self._lock:
            return tuple(self._keys.values())

    def get(self, kid: str) -> SigningKey | None:
        with self._lock:
            return self._keys.get(kid)

    def rotate(self, now: float | None = None) -> SigningKey:
        """Make a new active key; the previous one becomes ``verifying``. Returns the new key.

        The old key keeps verifying so tokens already handed out stay valid until they expire;
        retire it (see :meth:`retire_stale`) once the longest token lifetime has passed.
        """
        at = _now(now)
        new_key = SigningKey.generate(now=at)  # key generation outside the lock: it is slow-ish
        with self._lock:
            previous = self._keys[self._active_kid]
            self._keys[previous.kid] = dataclasses.replace(
                previous, state=KeyState.VERIFYING, rotated_at=at
            )
            self._keys[new_key.kid] = new_key
            self._active_kid = new_key.kid
        return new_key

    def retire(self, kid: str) -> SigningKey:
        """Stop accepting tokens signed by ``kid``. The active key cannot be retired; rotate first.

        Raises ``KeyError`` for an unknown kid and ``ValueError`` for the active key.
        """
        with self._lock:
            key = self._keys[kid]
            if key.state is KeyState.ACTIVE:
                raise ValueError("cannot retire the active key; rotate() first")
            retired = dataclasses.replace(key, state=KeyState.RETIRED)
            self._keys[kid] = retired
            return retired

    def retire_stale(self, *, max_token_ttl_secs: float, now: float | None = None) -> list[str]:
        """Retire ``verifying`` keys rotated out more than the longest token lifetime ago.

        By then every token they signed has expired (plus clock leeway), so keeping them only
        widens the window in which a stolen old key is useful. Returns the retired kids.
        """
        cutoff = _now(now) - max_token_ttl_secs - CLOCK_SKEW_LEEWAY_SECS
        with self._lock:
            stale = [
                k
                for k in self._keys.values()
                if k.state is KeyState.VERIFYING and (k.rotated_at or k.created_at) <= cutoff
            ]
            for key in stale:
                self._keys[key.kid] = dataclasses.replace(key, state=KeyState.RETIRED)
        return [k.kid for k in stale]

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public JWKS document: active and verifying keys only, active first."""
        with self._lock:
            keys = sorted(
                (k for k in self._keys.values() if k.state is not KeyState.RETIRED),
                key=lambda k: (k.state is not KeyState.ACTIVE, -k.created_at),
            )
        return {"keys": [k.public_jwk() for k in keys]}


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
