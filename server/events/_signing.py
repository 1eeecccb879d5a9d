"""How outgoing requests are signed, and how their secrets are kept.

Every webhook and backend callback carries two signatures over one key:

* Standard Webhooks (https://www.standardwebhooks.com): headers ``webhook-id``
  (the same on every attempt of one event), ``webhook-timestamp`` (epoch
  seconds of the attempt) and ``webhook-signature: v1,<base64 HMAC-SHA256 of
  "<id>.<timestamp>.<body>">``, computed by the ``standardwebhooks`` library.
* The payload's own ``signature`` field (seed 002): ``"sha256=<hex HMAC-SHA256>"``
  of the payload without its ``signature`` field, serialized as canonical
  JSON: keys sorted, no whitespace (``separators=(",", ":")``), non-ASCII
  characters as UTF-8, not escaped. The body itself is sent in that same
  canonical form, with ``signature`` in its sorted place.

The key: for a secret ``whsec_<base64>`` the bytes the base64 decodes to (as
Standard Webhooks prescribes); for any other secret (configuration files may
hold plain strings, as seed 002's ``"webhook-secret"``) its UTF-8 bytes.

Secrets Trellis generates are ``whsec_`` + base64 of 32 random bytes. They are
stored sealed (AES-256-GCM under an installation key in ``server_secrets``),
since signing needs the secret itself, not a digest. A backend's secret is not
stored at all: it is derived, HMAC-SHA256 of the backend id under another
installation key, so every replica computes the same one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection
from standardwebhooks import Webhook

from trellis.server.core.pagination import server_secret

__all__ = [
    "SECRET_PREFIX",
    "backend_secret",
    "canonical_json",
    "create_keys",
    "new_secret",
    "payload_signature",
    "seal",
    "secret_hint",
    "secret_key",
    "signed_request",
    "unseal",
]

SECRET_PREFIX: Final = "whsec_"
_SEAL_KEY: Final = "webhook_secrets"
_BACKEND_KEY: Final = "backend_callbacks"
_NONCE_BYTES: Final = 12


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_hint(secret: str) -> str:
    """A fingerprint to tell two secrets apart (``sha256:`` and the first 8
    hex digits of the secret's SHA-256): none of the secret's own characters,
    which for a short plain-text secret would be most of it."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` (see the module's account)."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            pass
    return secret.encode("utf-8")


def canonical_json(value: Any) -> bytes:
    """Keys sorted, no whitespace, UTF-8: the form that is signed and sent."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def payload_signature(key: bytes, payload: dict[str, Any]) -> str:
    """``sha256=<hex>`` over the canonical JSON of ``payload`` without ``signature``."""
    unsigned = {k: v for k, v in payload.items() if k != "signature"}
    return "sha256=" + hmac.new(key, canonical_json(unsigned), hashlib.sha256).hexdigest()


def signed_request(
    secret: str, delivery_id: str, payload: dict[str, Any], now: datetime
) -> tuple[bytes, list[tuple[str, str]]]:
    """The body (``payload`` with its ``signature``) and the headers of one attempt."""
    key = secret_key(secret)
    body = canonical_json({**payload, "signature": payload_signature(key, payload)})
    at = now.astimezone(UTC)
    headers = [
        ("content-type", "application/json"),
        ("user-agent", "trellis-webhooks"),
        ("webhook-id", delivery_id),
        ("webhook-timestamp", str(int(at.timestamp()))),
        ("webhook-signature", Webhook(key).sign(delivery_id, at, body)),
    ]
    return body, headers


def seal(conn: Connection, now_ms: int, secret: str) -> str:
    """``secret`` encrypted for storage: base64(nonce + AES-GCM ciphertext)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(server_secret(conn, now_ms, _SEAL_KEY)).encrypt(nonce, secret.encode(), None)
    return base64.b64encode(nonce + sealed).decode()


def unseal(key: bytes, sealed: str) -> str:
    """The secret ``seal`` stored, with the installation key ``key``
    (``server_secret(conn, now, "webhook_secrets")``, read once per pass)."""
    raw = base64.b64decode(sealed)
    try:
        return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], None).decode()
    except InvalidTag:
        raise ValueError("a webhook secret sealed under another installation key") from None


def seal_key(conn: Connection, now_ms: int) -> bytes:
    return server_secret(conn, now_ms, _SEAL_KEY)


def create_keys(conn: Connection, now_ms: int) -> None:
    """Makes the installation keys, if they are not there yet; in a write
    transaction (a read that inserts one would fail on PostgreSQL)."""
    seal_key(conn, now_ms)
    server_secret(conn, now_ms, _BACKEND_KEY)


def backend_secret(conn: Connection, now_ms: int, backend_id: str) -> str:
    """The secret that signs the callbacks of ``backend_id``."""
    key = server_secret(conn, now_ms, _BACKEND_KEY)
    derived = hmac.new(key, b"backend:" + backend_id.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(derived).decode()
