"""ES256 signing keys and the ring that rotates them (see ``jwt_keys``)."""

from __future__ import annotations

import base64
import dataclasses
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM: Final = "ES256"
"""The only JWS algorithm this module signs with or accepts."""

CLOCK_SKEW_LEEWAY_SECS: Final = 30
"""Tolerance applied to ``exp``, ``nbf`` and ``iat``.

Issuing and verifying hosts never agree on the time to the second; 30 s absorbs ordinary NTP
drift while staying small next to an access token's lifetime (minutes).
"""


_CURVE_NAME: Final = "secp256r1"
_COORDINATE_BYTES: Final = 32  # P-256 field elements are 256 bits.


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
