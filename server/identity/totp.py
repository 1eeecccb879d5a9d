"""Time-based one-time passwords (RFC 6238) for second-factor login.

Fixed profile, the one every authenticator app supports: HMAC-SHA1, 6 digits, 30-second
steps counted from the Unix epoch, secrets exchanged as base32 (RFC 4648). A "step" is
``floor(unix_time / 30)``; the code for a step is HOTP (RFC 4226) with the step as counter.

``verify`` returns the step that matched; the caller stores it per user and passes it back
as ``last_used_step`` next time, which makes every code single-use (RFC 6238 section 5.2).
Brute force is not handled here: with three acceptable codes per attempt a guess succeeds
with probability 3 in a million, so the caller must limit failed attempts per account.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import secrets
from urllib.parse import quote, urlencode

__all__ = [
    "DIGITS",
    "PERIOD_SECONDS",
    "SECRET_BYTES",
    "WINDOW_STEPS",
    "code_at",
    "new_secret",
    "provisioning_uri",
    "step_at",
    "verify",
]

DIGITS = 6
PERIOD_SECONDS = 30
# Steps accepted either side of the current one, for clock skew and typing time (RFC 6238
# section 5.2 recommends at most one step of network delay).
WINDOW_STEPS = 1
# 160 bits: the HMAC-SHA1 output size, recommended by RFC 4226 section 4 (R6).
SECRET_BYTES = 20
# RFC 4226 R6: the shared secret MUST be at least 128 bits.
_MIN_SECRET_BYTES = 16
# HOTP's counter is an 8-byte big-endian integer.
_MAX_STEP = 2**64 - 1


def new_secret() -> str:
    """Return a fresh random 160-bit secret as unpadded base32 (32 characters)."""
    # 20 bytes are a whole number of 5-byte base32 groups, so there is never padding.
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def step_at(at: float) -> int:
    """The time step containing Unix time ``at`` (seconds)."""
    if not math.isfinite(at) or at < 0:
        raise ValueError(f"TOTP time must be a finite, non-negative Unix time, got {at!r}")
    step = int(at // PERIOD_SECONDS)
    if step > _MAX_STEP:
        raise ValueError(f"TOTP time {at!r} is beyond the 64-bit step counter")
    return step


def code_at(secret: str, at: float) -> str:
    """The 6-digit code for ``secret`` at Unix time ``at``.

    Raises ValueError for a secret that is not base32 or is shorter than 128 bits.
    """
    return _hotp(_decode_secret(secret), step_at(at))


def verify(secret: str, code: str, now: float, last_used_step: int | None) -> int | None:
    """Check ``code`` against ``secret`` at Unix time ``now``; return the matched step or None.

    Accepts the code of the current step or of one step either side, but never of a step at
    or before ``last_used_step`` (replay). ``code`` must be exactly six ASCII digits; the
    caller may strip spaces first. Every candidate step is computed and compared in constant
    time, without stopping at the first match, so timing does not reveal which one matched.
    Raises ValueError only for a malformed ``secret`` or ``now`` (server-side data).
    """
    key = _decode_secret(secret)
    current = step_at(now)
    if not _is_well_formed(code):
        return None
    matched: int | None = None
    for step in range(current - WINDOW_STEPS, current + WINDOW_STEPS + 1):
        if not _is_usable(step, last_used_step):
            continue
        if hmac.compare_digest(_hotp(key, step), code):
            # Later steps overwrite earlier ones: should two steps share a code, keeping the
            # highest burns both for replay purposes.
            matched = step
    return matched


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    """The ``otpauth://`` URI (Google Authenticator Key URI format) to show as a QR code.

    The label is ``issuer:account``; issuer is repeated as a parameter, as the format
    recommends, and the algorithm, digits and period are spelled out for apps that do not
    assume the defaults. Neither issuer nor account may contain a colon.
    """
    if not account or not issuer:
        raise ValueError("TOTP account and issuer must not be empty")
    if ":" in account or ":" in issuer:
        raise ValueError("TOTP account and issuer must not contain ':'")
    canonical = base64.b32encode(_decode_secret(secret)).decode("ascii").rstrip("=")
    label = f"{quote(issuer, safe='@')}:{quote(account, safe='@')}"
    query = urlencode(
        {
            "secret": canonical,
            "issuer": issuer,
            "algorithm": "SHA1",
            "digits": str(DIGITS),
            "period": str(PERIOD_SECONDS),
        },
        # %20 rather than "+" for spaces: several authenticator apps show "+" literally.
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def _hotp(key: bytes, counter: int) -> str:
    """RFC 4226 HOTP value: HMAC-SHA1, dynamic truncation, last ``DIGITS`` decimal digits."""
    mac = hmac.new(key, counter.to_bytes(8, "big"), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    truncated = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFF_FFFF
    return str(truncated % 10**DIGITS).zfill(DIGITS)


def _decode_secret(secret: str) -> bytes:
    """Base32 secret to key bytes; tolerant of case, spaces and missing padding.

    Apps and humans show secrets in lower case, in groups of four, without '=' padding.
    """
    cleaned = secret.replace(" ", "").upper()
    padded = cleaned + "=" * (-len(cleaned) % 8)
    try:
        key = base64.b32decode(padded)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("TOTP secret is not valid base32") from exc
    if len(key) < _MIN_SECRET_BYTES:
        raise ValueError(f"TOTP secret must be at least {_MIN_SECRET_BYTES * 8} bits")
    return key


def _is_well_formed(code: str) -> bool:
    """Exactly six ASCII digits. (``str.isdigit`` alone also accepts e.g. Arabic digits.)"""
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def _is_usable(step: int, last_used_step: int | None) -> bool:
    """A step exists (non-negative) and comes after the last one already accepted."""
    return step >= 0 and (last_used_step is None or step > last_used_step)
