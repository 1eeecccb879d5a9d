"""Access-token signing and verification (trellis.server.identity.jwt_keys).

Pure and offline: real keys, real signatures, no mocks. Time is passed through the ``now``
parameters, so expiry tests never sleep. Attack tokens (alg none, HS256 key confusion,
tampering) are built by hand so that they are exactly what an attacker would send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trellis.server.identity.jwt_keys import (
    CLOCK_SKEW_LEEWAY_SECS,
    Claims,
    InvalidToken,
    KeyRing,
    KeyState,
    SigningKey,
    TokenIssuer,
)

ISSUER = "https://trellis.example"
AUDIENCE = "trellis-api"
TTL = 300
T0 = 1_700_000_000.0  # a fixed "now" well away from the wall clock


# --- helpers -------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64json(obj: object) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload)), signature


def valid_payload(now: float = T0, **overrides: object) -> dict[str, Any]:
    """The claims TokenIssuer would write, for hand-signed tokens."""
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-1",
        "org": "org-1",
        "scope": "runs:read",
        "token_type": "access",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + TTL,
        "jti": "jti-1",
    }
    payload.update(overrides)
    return payload


def sign_es256(key: SigningKey, payload: dict[str, Any], *, typ: str = "at+jwt") -> str:
    """Sign with one of our keys but arbitrary claims/header, bypassing TokenIssuer."""
    return jwt.encode(
        payload, key.private_key, algorithm="ES256", headers={"typ": typ, "kid": key.kid}
    )


def reason_of(issuer: TokenIssuer, token: str, *, now: float = T0) -> str:
    with pytest.raises(InvalidToken) as info:
        issuer.verify(token, now=now)
    assert str(info.value) == info.value.reason
    return info.value.reason


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.generate(now=T0)


@pytest.fixture
def issuer(ring: KeyRing) -> TokenIssuer:
    return TokenIssuer(ring, ISSUER, AUDIENCE, TTL)


# --- round trip ----------------------------------------------------------------------------


def test_issue_verify_round_trip(issuer: TokenIssuer, ring: KeyRing) -> None:
    issued = issuer.issue(
        subject="user-42",
        org="acme",
        scopes=["runs:read", "runs:write"],
        session_id="sess-7",
        extra={"amr": ["pwd"]},
        now=T0,
    )
    claims = issuer.verify(issued.token, now=T0 + 10)

    assert isinstance(claims, Claims)
    assert claims.subject == "user-42"
    assert claims.org == "acme"
    assert claims.scopes == ("runs:read", "runs:write")
    assert claims.session_id == "sess-7"
    assert claims.token_type == "access"
    assert claims.jti == issued.jti
    assert claims.expires_at == issued.expires_at == int(T0) + TTL
    assert claims.raw["amr"] == ["pwd"]

    header, payload, _ = split(issued.token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": ring.active.kid}
    assert payload["scope"] == "runs:read runs:write"
    assert payload["iss"] == ISSUER and payload["aud"] == AUDIENCE
    assert payload["iat"] == payload["nbf"] == int(T0)
    assert payload["sid"] == "sess-7"


def test_sid_omitted_and_jti_unique(issuer: TokenIssuer) -> None:
    first = issuer.issue(subject="u", org="o", scopes=[], token_type="service", now=T0)
    second = issuer.issue(subject="u", org="o", scopes=[], token_type="service", now=T0)
    assert first.jti != second.jti
    assert "sid" not in split(first.token)[1]
    claims = issuer.verify(first.token, now=T0)
    assert claims.session_id is None
    assert claims.scopes == ()
    assert claims.token_type == "service"


def test_issue_rejects_bad_input(issuer: TokenIssuer) -> None:
    with pytest.raises(ValueError, match="invalid scope"):
        issuer.issue(subject="u", org="o", scopes=["runs read"], now=T0)
    with pytest.raises(TypeError):
        issuer.issue(subject="u", org="o", scopes="runs:read", now=T0)
    with pytest.raises(ValueError, match="reserved"):
        issuer.issue(subject="u", org="o", scopes=[], extra={"exp": 9_999_999_999}, now=T0)
    with pytest.raises(ValueError):
        issuer.issue(subject="", org="o", scopes=[], now=T0)


# --- time claims ---------------------------------------------------------------------------


def test_expired_token_rejected_after_leeway(issuer: TokenIssuer) -> None:
    issued = issuer.issue(subject="u", org="o", scopes=[], now=T0)
    exp = issued.expires_at
    # Still inside the documented clock-skew leeway: accepted.
    assert issuer.verify(issued.token, now=exp + CLOCK_SKEW_LEEWAY_SECS - 1).jti == issued.jti
    assert reason_of(issuer, issued.token, now=exp + CLOCK_SKEW_LEEWAY_SECS) == "token expired"
    assert reason_of(issuer, issued.token, now=exp + 3600) == "token expired"


def test_nbf_in_future_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    token = sign_es256(ring.active, valid_payload(nbf=int(T0) + 120))
    assert reason_of(issuer, token, now=T0) == "token not yet valid"
    # Once nbf (minus leeway) is reached the same token is fine: the check is nbf, not luck.
    assert issuer.verify(token, now=T0 + 120 - CLOCK_SKEW_LEEWAY_SECS).subject == "user-1"


def test_iat_in_future_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    token = sign_es256(ring.active, valid_payload(iat=int(T0) + 600))
    assert reason_of(issuer, token) == "token issued in the future"


def test_non_numeric_time_claim_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    token = sign_es256(ring.active, valid_payload(exp="tomorrow"))
    assert reason_of(issuer, token) == "invalid claim: exp"


# --- issuer and audience -------------------------------------------------------------------


def test_wrong_audience_rejected(ring: KeyRing) -> None:
    other = TokenIssuer(ring, ISSUER, "billing-api", TTL)
    token = other.issue(subject="u", org="o", scopes=[], now=T0).token
    assert reason_of(TokenIssuer(ring, ISSUER, AUDIENCE, TTL), token) == "invalid audience"


def test_audience_list_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    # Exact match only: a token for several audiences is not a token for this one.
    token = sign_es256(ring.active, valid_payload(aud=[AUDIENCE, "billing-api"]))
    assert reason_of(issuer, token) == "invalid audience"


def test_wrong_issuer_rejected(ring: KeyRing) -> None:
    other = TokenIssuer(ring, "https://evil.example", AUDIENCE, TTL)
    token = other.issue(subject="u", org="o", scopes=[], now=T0).token
    assert reason_of(TokenIssuer(ring, ISSUER, AUDIENCE, TTL), token) == "invalid issuer"


# --- tampering and algorithm attacks -------------------------------------------------------


def test_tampered_payload_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(subject="u", org="tenant-a", scopes=["runs:read"], now=T0).token
    header_b64, _, signature_b64 = token.split(".")
    payload = split(token)[1]
    payload["org"] = "tenant-b"
    forged = f"{header_b64}.{b64json(payload)}.{signature_b64}"
    assert reason_of(issuer, forged) == "invalid signature"


def test_tampered_signature_rejected(issuer: TokenIssuer) -> None:
    token = issuer.issue(subject="u", org="o", scopes=[], now=T0).token
    header_b64, payload_b64, signature_b64 = token.split(".")
    signature = bytearray(b64url_decode(signature_b64))
    signature[5] ^= 0x01
    forged = f"{header_b64}.{payload_b64}.{b64url(bytes(signature))}"
    assert reason_of(issuer, forged) == "invalid signature"


def test_alg_none_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": ring.active.kid}
    token = f"{b64json(header)}.{b64json(valid_payload())}."
    assert reason_of(issuer, token) == "unsupported algorithm"


def test_hs256_with_public_key_as_secret_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    # The classic confusion attack: HMAC "signed" with the published public key.
    secret = ring.active.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": ring.active.kid}
    signing_input = f"{b64json(header)}.{b64json(valid_payload())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    assert reason_of(issuer, token) == "unsupported algorithm"


def test_rs256_with_our_kid_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(
        valid_payload(),
        rsa_key,
        algorithm="RS256",
        headers={"typ": "at+jwt", "kid": ring.active.kid},
    )
    assert reason_of(issuer, token) == "unsupported algorithm"


def test_malformed_tokens_rejected(issuer: TokenIssuer) -> None:
    for garbage in ["", "abc", "a.b.c", "x" * 10_000]:
        assert reason_of(issuer, garbage) == "malformed token"


# --- header checks -------------------------------------------------------------------------


def test_typ_other_than_at_jwt_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    assert reason_of(issuer, sign_es256(ring.active, valid_payload(), typ="JWT")) == (
        "invalid token type"
    )
    # RFC 9068 section 4 allows the full media type as well.
    media = sign_es256(ring.active, valid_payload(), typ="application/at+jwt")
    assert issuer.verify(media, now=T0).subject == "user-1"


def test_unknown_kid_rejected(issuer: TokenIssuer) -> None:
    stranger = TokenIssuer(KeyRing.generate(now=T0), ISSUER, AUDIENCE, TTL)
    token = stranger.issue(subject="u", org="o", scopes=[], now=T0).token
    assert reason_of(issuer, token) == "unknown signing key"


def test_missing_kid_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    token = jwt.encode(
        valid_payload(), ring.active.private_key, algorithm="ES256", headers={"typ": "at+jwt"}
    )
    assert reason_of(issuer, token) == "missing signing key id"


@pytest.mark.parametrize(
    "claim", ["sub", "org", "jti", "iss", "aud", "exp", "nbf", "iat", "token_type"]
)
def test_missing_required_claim_rejected(issuer: TokenIssuer, ring: KeyRing, claim: str) -> None:
    payload = valid_payload()
    del payload[claim]
    assert reason_of(issuer, sign_es256(ring.active, payload)) == (
        f"missing required claim: {claim}"
    )


def test_empty_org_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    assert reason_of(issuer, sign_es256(ring.active, valid_payload(org=""))) == (
        "invalid claim: org"
    )


# --- rotation ------------------------------------------------------------------------------


def test_rotation_keeps_previous_key_verifying(issuer: TokenIssuer, ring: KeyRing) -> None:
    old_kid = ring.active.kid
    old_token = issuer.issue(subject="u", org="o", scopes=[], now=T0).token

    new_key = ring.rotate(T0 + 60)

    assert new_key.kid != old_kid
    assert ring.active.kid == new_key.kid
    old_key = ring.get(old_kid)
    assert old_key is not None
    assert old_key.state is KeyState.VERIFYING
    assert old_key.rotated_at == T0 + 60
    assert issuer.verify(old_token, now=T0 + 61).subject == "u"
    new_token = issuer.issue(subject="u", org="o", scopes=[], now=T0 + 61).token
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid


def test_token_of_retired_key_rejected(issuer: TokenIssuer, ring: KeyRing) -> None:
    old_kid = ring.active.kid
    token = issuer.issue(subject="u", org="o", scopes=[], now=T0).token
    ring.rotate(T0 + 1)
    ring.retire(old_kid)
    assert reason_of(issuer, token, now=T0 + 2) == "signing key retired"


def test_active_key_cannot_be_retired(ring: KeyRing) -> None:
    with pytest.raises(ValueError):
        ring.retire(ring.active.kid)
    with pytest.raises(KeyError):
        ring.retire("no-such-kid")


def test_retire_stale_waits_for_longest_token_lifetime(ring: KeyRing) -> None:
    old_kid = ring.active.kid
    ring.rotate(T0)
    assert ring.retire_stale(max_token_ttl_secs=TTL, now=T0 + TTL) == []
    due = T0 + TTL + CLOCK_SKEW_LEEWAY_SECS
    assert ring.retire_stale(max_token_ttl_secs=TTL, now=due) == [old_kid]
    old_key = ring.get(old_kid)
    assert old_key is not None and old_key.state is KeyState.RETIRED


def test_key_ring_requires_exactly_one_active_key() -> None:
    a, b = SigningKey.generate(now=T0), SigningKey.generate(now=T0)
    with pytest.raises(ValueError, match="exactly one active"):
        KeyRing([a, b])
    with pytest.raises(ValueError, match="exactly one active"):
        KeyRing([])
    with pytest.raises(ValueError, match="duplicate"):
        KeyRing([a, a])


def test_concurrent_issue_verify_and_rotate(issuer: TokenIssuer, ring: KeyRing) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(25):
                token = issuer.issue(subject="u", org="o", scopes=["a"], now=T0).token
                issuer.verify(token, now=T0)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(10):
        ring.rotate(T0 + i)
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(k.state is KeyState.ACTIVE for k in ring.keys) == 1
    assert len(ring.keys) == 11


# --- JWKS ----------------------------------------------------------------------------------


def test_jwks_lists_active_and_verifying_public_keys_only(ring: KeyRing) -> None:
    retired_kid = ring.active.kid
    ring.rotate(T0 + 1)
    verifying_kid = ring.active.kid
    ring.rotate(T0 + 2)
    ring.retire(retired_kid)

    document = ring.jwks()

    assert set(document) == {"keys"}
    by_kid = {jwk["kid"]: jwk for jwk in document["keys"]}
    assert set(by_kid) == {ring.active.kid, verifying_kid}
    assert document["keys"][0]["kid"] == ring.active.kid
    for kid, jwk in by_kid.items():
        assert set(jwk) == {"kty", "crv", "x", "y", "kid", "use", "alg"}
        assert "d" not in jwk
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == ("EC", "P-256", "sig", "ES256")
        key = ring.get(kid)
        assert key is not None
        numbers = key.public_key.public_numbers()
        for coord, value in (("x", numbers.x), ("y", numbers.y)):
            assert "=" not in jwk[coord]
            raw = b64url_decode(jwk[coord])
            assert len(raw) == 32
            assert int.from_bytes(raw, "big") == value


def test_jwk_verifies_token_independently(issuer: TokenIssuer, ring: KeyRing) -> None:
    # Real wall clock here: PyJWT's own decode checks exp against it.
    token = issuer.issue(subject="user-9", org="acme", scopes=["runs:read"]).token
    (jwk,) = ring.jwks()["keys"]
    public = jwt.PyJWK(jwk)
    payload = jwt.decode(token, key=public, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)
    assert payload["sub"] == "user-9"
    # And the JWK is the ring's key, not merely some key that parses.
    stranger = TokenIssuer(KeyRing.generate(), ISSUER, AUDIENCE, TTL)
    foreign = stranger.issue(subject="x", org="y", scopes=[]).token
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(foreign, key=public, algorithms=["ES256"], audience=AUDIENCE, issuer=ISSUER)


# --- persistence format --------------------------------------------------------------------


def test_signing_key_dict_round_trip(ring: KeyRing) -> None:
    ring.rotate(T0 + 5)
    original = next(k for k in ring.keys if k.state is KeyState.VERIFYING)

    stored = json.loads(json.dumps(original.to_dict()))  # what a database row would hold
    assert stored["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    restored = SigningKey.from_dict(stored)

    assert restored.to_dict() == original.to_dict()
    assert restored == original
    assert restored.state is KeyState.VERIFYING
    assert restored.rotated_at == T0 + 5
    assert restored.public_jwk() == original.public_jwk()
    # The restored private key signs tokens the original's public key accepts.
    active = SigningKey.from_dict({**stored, "state": "active"})
    signed = TokenIssuer(KeyRing([active]), ISSUER, AUDIENCE, TTL).issue(
        subject="u", org="o", scopes=[], now=T0
    )
    payload = jwt.decode(
        signed.token,
        key=original.public_key,
        algorithms=["ES256"],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert payload["sub"] == "u"


def test_signing_key_from_dict_rejects_bad_rows() -> None:
    good = SigningKey.generate(now=T0).to_dict()
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for bad in [
        {**good, "state": "paused"},
        {**good, "alg": "RS256"},
        {**good, "private_key_pem": "not a key"},
        {**good, "private_key_pem": p384.decode()},
        {**good, "created_at": "yesterday"},
    ]:
        with pytest.raises(ValueError):
            SigningKey.from_dict(bad)


def test_signing_key_repr_hides_private_key() -> None:
    key = SigningKey.generate(now=T0)
    assert "private" not in repr(key).lower()
