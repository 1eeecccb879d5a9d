"""Credentials primitives: Argon2id passwords, RFC 6238 TOTP, prefixed bearer tokens.

No mocks: real hashes, real HMACs, real random tokens. Each password hash costs tens of
milliseconds, so hashes are shared through module-scoped fixtures where possible.
"""

from __future__ import annotations

import base64
import hashlib
import string
import zlib
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from argon2 import PasswordHasher, Type

from trellis.server.identity import passwords, secrets_, totp
from trellis.server.identity.secrets_ import TokenKind

# --------------------------------------------------------------------------- TOTP

# RFC 6238 Appendix B uses the ASCII seed "12345678901234567890" for SHA-1.
RFC_SEED = base64.b32encode(b"12345678901234567890").decode("ascii")

# (Unix time, 8-digit value from Appendix B); our codes are its last six digits.
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]

NOW = 1_700_000_015.0  # 15 s into a step, so ±1 step is unambiguous
NOW_STEP = int(NOW // 30)
# Window tests use the fixed RFC seed rather than a random secret: with a random one, two
# steps near NOW could share a 6-digit code (about 1 in 10**6) and make a test flaky.
STEPS_NEAR_NOW = range(-3, 4)


@pytest.mark.parametrize(("at", "eight_digits"), RFC_VECTORS)
def test_totp_rfc6238_vectors(at: int, eight_digits: str) -> None:
    assert totp.code_at(RFC_SEED, at) == eight_digits[-6:]


@pytest.mark.parametrize(("at", "eight_digits"), RFC_VECTORS)
def test_totp_rfc6238_vectors_verify(at: int, eight_digits: str) -> None:
    assert totp.verify(RFC_SEED, eight_digits[-6:], at, None) == at // 30


def test_totp_step_boundaries() -> None:
    # 59 s and 60 s are in different steps, 30 s and 59 s in the same one.
    assert totp.step_at(30) == totp.step_at(59.999) == 1
    assert totp.step_at(60) == 2
    assert totp.code_at(RFC_SEED, 30) == totp.code_at(RFC_SEED, 59)


def test_totp_new_secret_is_160_bit_base32() -> None:
    secret = totp.new_secret()
    assert len(secret) == 32
    assert set(secret) <= set(string.ascii_uppercase + "234567")
    assert len(base64.b32decode(secret)) == 20
    assert len({totp.new_secret() for _ in range(200)}) == 200


def test_totp_secret_tolerates_case_spaces_and_missing_padding() -> None:
    secret = totp.new_secret()
    spaced = " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)).lower()
    assert totp.code_at(spaced, NOW) == totp.code_at(secret, NOW)


@pytest.mark.parametrize("bad", ["", "not base32!", "GEZDGNBV", "GEZDGNBVGY3TQOJQ"])
def test_totp_rejects_invalid_or_short_secret(bad: str) -> None:
    # The last two are valid base32 but only 40 and 80 bits (RFC 4226 wants >= 128).
    with pytest.raises(ValueError):
        totp.code_at(bad, NOW)


@pytest.mark.parametrize("at", [-1.0, float("nan"), float("inf")])
def test_totp_rejects_impossible_time(at: float) -> None:
    with pytest.raises(ValueError):
        totp.code_at(RFC_SEED, at)


def test_totp_fixture_codes_are_distinct() -> None:
    # Precondition of the window tests below; fails loudly rather than making them lie.
    codes = [totp.code_at(RFC_SEED, NOW + k * 30) for k in STEPS_NEAR_NOW]
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_totp_accepts_current_and_adjacent_steps(offset: int) -> None:
    code = totp.code_at(RFC_SEED, NOW + offset * 30)
    assert totp.verify(RFC_SEED, code, NOW, None) == NOW_STEP + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_totp_rejects_steps_outside_window(offset: int) -> None:
    code = totp.code_at(RFC_SEED, NOW + offset * 30)
    assert totp.verify(RFC_SEED, code, NOW, None) is None


def test_totp_accepts_fresh_random_secret() -> None:
    secret = totp.new_secret()
    assert totp.verify(secret, totp.code_at(secret, NOW), NOW, None) is not None


def test_totp_rejects_wrong_code() -> None:
    code = totp.code_at(RFC_SEED, NOW)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert totp.verify(RFC_SEED, wrong, NOW, None) is None


def test_totp_replay_rejected() -> None:
    secret = RFC_SEED
    code = totp.code_at(secret, NOW)
    step = totp.verify(secret, code, NOW, None)
    assert step == NOW_STEP
    # Same code again, even a few seconds later within the same step: refused.
    assert totp.verify(secret, code, NOW + 5, step) is None
    # An older code that is still inside the window is refused too.
    previous = totp.code_at(secret, NOW - 30)
    assert totp.verify(secret, previous, NOW, step) is None
    # The next step's code is still fine.
    following = totp.code_at(secret, NOW + 30)
    assert totp.verify(secret, following, NOW + 30, step) == NOW_STEP + 1


def test_totp_last_used_step_ahead_blocks_current_code() -> None:
    # A code from step s+1 was used early; the code of step s must not then be accepted.
    code = totp.code_at(RFC_SEED, NOW)
    assert totp.verify(RFC_SEED, code, NOW, NOW_STEP + 1) is None
    assert totp.verify(RFC_SEED, code, NOW, NOW_STEP - 1) == NOW_STEP


def _malformed_codes() -> list[str]:
    code = totp.code_at(RFC_SEED, NOW)
    # Digits that str.isdigit() accepts but are not ASCII (written as offsets, not literals).
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in code)
    arabic_indic = "".join(chr(0x0660 + int(c)) for c in code)
    return [
        "",
        code[:5],
        code + "0",
        code[:5] + "a",
        f" {code}",
        f"{code}\n",
        f"{code[:3]} {code[3:]}",
        f"-{code[1:]}",
        fullwidth,
        arabic_indic,
        totp.code_at(RFC_SEED, NOW - 60) + "0",  # 7 digits
    ]


@pytest.mark.parametrize("code", _malformed_codes())
def test_totp_rejects_malformed_codes(code: str) -> None:
    assert totp.verify(RFC_SEED, code, NOW, None) is None


def test_totp_provisioning_uri() -> None:
    secret = totp.new_secret()
    uri = totp.provisioning_uri(secret.lower(), "ada@example.com", "Trellis Dev")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert unquote(parts.path) == "/Trellis Dev:ada@example.com"
    assert " " not in uri and "+" not in uri
    query = parse_qs(parts.query, strict_parsing=True)
    assert query == {
        "secret": [secret],
        "issuer": ["Trellis Dev"],
        "algorithm": ["SHA1"],
        "digits": ["6"],
        "period": ["30"],
    }


@pytest.mark.parametrize(("account", "issuer"), [("a:b", "Trellis"), ("ada", "Tre:llis")])
def test_totp_provisioning_uri_rejects_colons(account: str, issuer: str) -> None:
    with pytest.raises(ValueError):
        totp.provisioning_uri(totp.new_secret(), account, issuer)


# ---------------------------------------------------------------------- passwords

PASSWORD = "correct horse battery staple"
OWASP_MIN_MEMORY_KIB = 19456
OWASP_MIN_TIME = 2
OWASP_MIN_PARALLELISM = 1


@pytest.fixture(scope="module")
def stored() -> str:
    return passwords.hash_password(PASSWORD)


def _phc_parameters(phc: str) -> tuple[str, int, dict[str, int], bytes, bytes]:
    """Split ``$argon2id$v=19$m=..,t=..,p=..$salt$hash`` without argon2's own parser."""
    empty, variant, version, params, salt, tag = phc.split("$")
    assert empty == ""
    key, _, value = version.partition("=")
    assert key == "v"
    costs = {k: int(v) for k, v in (item.split("=") for item in params.split(","))}

    def b64(text: str) -> bytes:
        return base64.b64decode(text + "=" * (-len(text) % 4))

    return variant, int(value), costs, b64(salt), b64(tag)


def test_password_round_trip(stored: str) -> None:
    assert passwords.verify_password(stored, PASSWORD) is True


@pytest.mark.parametrize(
    "attempt",
    ["", PASSWORD.upper(), PASSWORD + " ", PASSWORD[:-1], "correct horse battery stapl3"],
)
def test_password_wrong_is_false(stored: str, attempt: str) -> None:
    assert passwords.verify_password(stored, attempt) is False


def test_password_with_unencodable_characters_is_false(stored: str) -> None:
    assert passwords.verify_password(stored, "\ud800 lone surrogate") is False


def test_password_hashes_are_salted() -> None:
    first, second = passwords.hash_password(PASSWORD), passwords.hash_password(PASSWORD)
    assert first != second
    assert _phc_parameters(first)[3] != _phc_parameters(second)[3]


def _malformed_hashes(real: str) -> list[str]:
    return [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$abc$def",
        real[:-10],
        real.replace("$argon2id$", "$argon2xx$"),
        real.replace("m=19456", "m=1"),
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "pbkdf2_sha256$600000$salt$hash",
        "é" * 20,
        real + "é",
    ]


def test_password_malformed_stored_hash_is_false_not_exception(stored: str) -> None:
    for bad in _malformed_hashes(stored):
        assert passwords.verify_password(bad, PASSWORD) is False, bad


def test_password_hash_is_argon2id_with_owasp_parameters(stored: str) -> None:
    variant, version, costs, salt, tag = _phc_parameters(stored)
    assert variant == "argon2id"
    assert version == 19
    assert set(costs) == {"m", "t", "p"}
    assert costs["m"] >= OWASP_MIN_MEMORY_KIB
    assert costs["t"] >= OWASP_MIN_TIME
    assert costs["p"] >= OWASP_MIN_PARALLELISM
    assert len(salt) >= 16
    assert len(tag) >= 32


def test_needs_rehash_false_for_fresh_hash(stored: str) -> None:
    assert passwords.needs_rehash(stored) is False


def test_needs_rehash_true_for_weaker_parameters() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID)
    old = weak.hash(PASSWORD)
    # Old hashes keep working (so users can log in and be upgraded) but are flagged.
    assert passwords.verify_password(old, PASSWORD) is True
    assert passwords.needs_rehash(old) is True


def test_needs_rehash_true_for_other_argon2_variant() -> None:
    same_costs_argon2i = PasswordHasher(
        time_cost=passwords.TIME_COST,
        memory_cost=passwords.MEMORY_COST_KIB,
        parallelism=passwords.PARALLELISM,
        type=Type.I,
    ).hash(PASSWORD)
    assert passwords.needs_rehash(same_costs_argon2i) is True


def test_needs_rehash_true_for_unparseable_hash(stored: str) -> None:
    for bad in ["", "garbage", "é" * 20]:
        assert passwords.needs_rehash(bad) is True


def test_dummy_verify_does_a_real_verification_without_raising() -> None:
    # Its reference hash must carry the current parameters, or its timing would differ
    # from a real verification and reveal that the username does not exist.
    assert passwords.needs_rehash(passwords._DUMMY_HASH) is False
    for plain in ["", PASSWORD, "\ud800", "x" * 5000]:
        passwords.dummy_verify(plain)


@pytest.mark.parametrize(
    ("plain", "problem"),
    [
        ("", "too short"),
        ("1234567", "too short"),
        ("x" * 1025, "too long"),
        (" " * 8, "whitespace"),
        ("\t\n \u3000\t\n  ", "whitespace"),
        ("abcdefg\ud800", "not valid text"),
    ],
)
def test_check_strength_problems(plain: str, problem: str) -> None:
    message = passwords.check_strength(plain)
    assert message is not None
    assert problem in message


@pytest.mark.parametrize(
    "plain", ["12345678", "x" * 1024, " padded passphrase ", "pässwörd", "密码密码密码密码"]
)
def test_check_strength_accepts(plain: str) -> None:
    assert passwords.check_strength(plain) is None


# ------------------------------------------------------------------------- tokens

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

EXPECTED_PREFIX = {
    TokenKind.PAT: "trl_pat_",
    TokenKind.MACHINE_USER: "trl_mu_",
    TokenKind.CLIENT_SECRET: "trl_cs_",
    TokenKind.REFRESH: "trl_rt_",
    TokenKind.AUTH_CODE: "trl_ac_",
}


def _base62_value(text: str) -> int:
    value = 0
    for char in text:
        value = value * 62 + BASE62.index(char)
    return value


@pytest.mark.parametrize("kind", list(TokenKind))
def test_token_prefix_and_shape(kind: TokenKind) -> None:
    issued = secrets_.new_token(kind)
    prefix = EXPECTED_PREFIX[kind]
    assert issued.kind is kind
    assert issued.token.startswith(prefix)
    body = issued.token[len(prefix) :]
    assert len(body) == 43 + 6
    assert set(body) <= set(BASE62)
    # The documented format, checked independently of the module's own encoder.
    secret, checksum = body[:43], body[43:]
    assert _base62_value(secret) < 2**256
    assert _base62_value(checksum) == zlib.crc32((prefix + secret).encode("ascii"))


def test_token_kinds_are_exactly_the_documented_prefixes() -> None:
    assert {kind: kind.prefix for kind in TokenKind} == EXPECTED_PREFIX


@pytest.mark.parametrize("kind", list(TokenKind))
def test_token_digest_is_sha256_of_token(kind: TokenKind) -> None:
    issued = secrets_.new_token(kind)
    expected = hashlib.sha256(issued.token.encode("ascii")).hexdigest()
    assert issued.digest == expected
    assert secrets_.digest_of(issued.token) == expected


@pytest.mark.parametrize("kind", list(TokenKind))
def test_token_parse_round_trip(kind: TokenKind) -> None:
    issued = secrets_.new_token(kind)
    parsed = secrets_.parse(issued.token)
    assert parsed == secrets_.ParsedToken(kind=kind, digest=issued.digest)


def test_tokens_are_unique() -> None:
    issued = [secrets_.new_token(TokenKind.PAT) for _ in range(10_000)]
    assert len({t.token for t in issued}) == len(issued)
    assert len({t.digest for t in issued}) == len(issued)
    # 256 random bits: no two secrets should even share their first 10 characters.
    assert len({t.token[8:18] for t in issued}) == len(issued)


def test_token_hint_and_repr_do_not_leak_the_secret() -> None:
    issued = secrets_.new_token(TokenKind.PAT)
    assert issued.hint == "trl_pat_..." + issued.token[-4:]
    secret_part = issued.token[8:51]
    assert secret_part not in issued.hint
    assert issued.token not in repr(issued)
    assert secret_part not in repr(issued)


@pytest.mark.parametrize("kind", list(TokenKind))
def test_token_every_single_character_typo_is_rejected(kind: TokenKind) -> None:
    token = secrets_.new_token(kind).token
    start = len(kind.prefix)
    for position in range(start, len(token)):
        original = token[position]
        for replacement in {BASE62[(BASE62.index(original) + 1) % 62], "A", "z", "0"}:
            if replacement == original:
                continue
            typo = token[:position] + replacement + token[position + 1 :]
            assert secrets_.parse(typo) is None, (position, replacement)


def test_token_adjacent_transpositions_are_rejected() -> None:
    token = secrets_.new_token(TokenKind.REFRESH).token
    for position in range(len("trl_rt_"), len(token) - 1):
        a, b = token[position], token[position + 1]
        if a == b:
            continue
        swapped = token[:position] + b + a + token[position + 2 :]
        assert secrets_.parse(swapped) is None, position


def test_token_truncation_and_extension_rejected() -> None:
    token = secrets_.new_token(TokenKind.PAT).token
    for cut in range(1, len(token)):
        assert secrets_.parse(token[:cut]) is None, cut
        assert secrets_.parse(token[cut:]) is None, cut
    assert secrets_.parse(token + "0") is None
    assert secrets_.parse(token[:20] + token[21:]) is None  # a character dropped mid-way


def test_token_of_one_kind_does_not_parse_as_another() -> None:
    # trl_mu_, trl_cs_, trl_rt_ and trl_ac_ have the same length, so only the checksum,
    # which covers the prefix, stops a relabelled token.
    token = secrets_.new_token(TokenKind.MACHINE_USER).token
    body = token[len("trl_mu_") :]
    for other in ("trl_cs_", "trl_rt_", "trl_ac_"):
        assert secrets_.parse(other + body) is None, other


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: f" {t}",
        lambda t: f"{t}\n",
        lambda t: f"Bearer {t}",
        lambda t: t[:8] + t[8:].swapcase(),
        lambda t: t[:30] + "-" + t[31:],
        lambda t: t[:30] + "_" + t[31:],
        lambda t: t[:30] + "é" + t[31:],
        lambda t: t[:30] + "\u0661" + t[31:],  # an Arabic-Indic digit
        lambda t: "ghp_" + t[8:],
        lambda t: "trl_xx_" + t[8:],
        lambda t: "TRL_PAT_" + t[8:],
    ],
)
def test_token_bad_prefix_or_charset_rejected(mangle: Callable[[str], str]) -> None:
    token = secrets_.new_token(TokenKind.PAT).token
    assert secrets_.parse(mangle(token)) is None


@pytest.mark.parametrize("junk", ["", "trl_pat_", "trl_", "not a token", "x" * 57])
def test_token_parse_junk(junk: str) -> None:
    assert secrets_.parse(junk) is None
