"""Password hashing and verification with Argon2id.

Stored values are PHC strings (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``), so each
hash carries its own parameters and salt. That lets the parameters below be raised later
without invalidating existing hashes: old hashes still verify, and ``needs_rehash`` tells
the login path to store a fresh hash while it holds the plaintext.

Typical login flow::

    user = find_user(name)
    if user is None:
        dummy_verify(password)  # spend the same time as a real check
        return fail()
    if not verify_password(user.password_hash, password):
        return fail()
    if needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = [
    "MAX_LENGTH",
    "MEMORY_COST_KIB",
    "MIN_LENGTH",
    "PARALLELISM",
    "TIME_COST",
    "check_strength",
    "dummy_verify",
    "hash_password",
    "needs_rehash",
    "verify_password",
]

# OWASP Password Storage Cheat Sheet, Argon2id section
# (https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html):
# "Use Argon2id with a minimum configuration of 19 MiB of memory, an iteration count of 2,
# and 1 degree of parallelism" (m=19456 KiB, t=2, p=1). We use exactly that configuration:
# it is the documented floor, keeps a login at tens of milliseconds, and p=1 keeps one login
# on one core so concurrent logins do not starve the server. Raising any of these later is
# safe (see needs_rehash). Salt (16 bytes) and tag (32 bytes) are argon2-cffi's defaults.
MEMORY_COST_KIB = 19 * 1024
TIME_COST = 2
PARALLELISM = 1

# NIST SP 800-63B asks for at least 8 characters and for accepting long passphrases; the
# upper bound only stops absurd inputs (Argon2 pre-hashes the password, so cost is flat).
MIN_LENGTH = 8
MAX_LENGTH = 1024

_HASHER = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_COST_KIB,
    parallelism=PARALLELISM,
    hash_len=32,
    salt_len=16,
    encoding="utf-8",
    type=Type.ID,
)

# A real hash of a random, immediately discarded password, made with the current parameters
# so that dummy_verify costs what a real verification costs. Computing it at import (rather
# than on first use) keeps the first unknown-username login from being slower than the rest.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(32))


def hash_password(plain: str) -> str:
    """Return an Argon2id PHC string for ``plain`` with a fresh random salt.

    Raises ``UnicodeEncodeError`` for strings that are not valid Unicode text (lone
    surrogates); ``check_strength`` reports those before this is reached.
    """
    return _HASHER.hash(plain)


def verify_password(stored: str, plain: str) -> bool:
    """Whether ``plain`` matches the PHC string ``stored``.

    Returns False, never raises, for a wrong password and for a stored value that is not a
    usable Argon2 hash: a login must fail closed, not turn into a server error. The
    comparison of the derived tag is constant-time inside libargon2.
    """
    try:
        return _HASHER.verify(stored, plain)
    except (VerificationError, InvalidHashError):
        # VerifyMismatchError (wrong password) is a VerificationError; so are hashes that
        # decode badly or carry parameters libargon2 refuses.
        return False
    except UnicodeEncodeError:
        # A non-ASCII stored value, or a password with lone surrogates (which JSON allows):
        # neither can ever have matched a hash this module produced.
        return False


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters (or type) than the current ones.

    Call after a successful ``verify_password`` and store ``hash_password(plain)`` if True.
    A value that cannot be parsed also answers True: it is not something we would produce.
    """
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, UnicodeError):
        return True


def dummy_verify(plain: str) -> None:
    """Spend the time of one verification and discard the result.

    Call it when the username does not exist, so that the response time of a failed login
    does not reveal whether the account exists. It runs the very same code path as
    ``verify_password`` against a hash with the current parameters. (Accounts whose hash
    still has older parameters take a different time until they are rehashed on login.)
    """
    verify_password(_DUMMY_HASH, plain)


def check_strength(plain: str) -> str | None:
    """Return a human-readable problem with ``plain`` as a new password, or None if fine.

    Deliberately minimal, per NIST SP 800-63B: length bounds and no blank passwords, no
    composition rules (those push users to predictable patterns). Length is counted in
    Unicode code points, which is what a user perceives as characters for most scripts.
    """
    if len(plain) < MIN_LENGTH:
        return f"Password is too short: use at least {MIN_LENGTH} characters."
    if len(plain) > MAX_LENGTH:
        return f"Password is too long: use at most {MAX_LENGTH} characters."
    if plain.isspace():
        return "Password must not consist only of whitespace."
    if not _is_encodable(plain):
        return "Password contains characters that are not valid text."
    return None


def _is_encodable(plain: str) -> bool:
    """Whether ``plain`` can be hashed: lone surrogates have no UTF-8 encoding."""
    try:
        plain.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
