"""Golden transcripts of REST exchanges (``tests/test_golden_rest.py``).

A scenario drives a real server over HTTP through ``Transcript.client``; every
exchange is written down as the request line, the answer's status, its headers
(all but the transport's own) and its body bytes, after replacing the values
that legitimately differ from one run to the next with placeholders. The text is
compared exactly with ``tests/golden/<scenario>.txt``; ``TRELLIS_GOLDEN_UPDATE=1``
rewrites the file instead.

Normalization keeps the byte layout of a body: a placeholder takes the place of
a value inside its quotes (or of a bare number), so key order, spacing,
escaping and number formatting are compared as sent. It replaces:

- by pattern, anywhere (bodies, paths, header values): ES256 JWTs ``<jwt-N>``,
  ``trl_…`` tokens ``<trl_pat-N>`` (…), generated ids (32 hex digits, or a dashed
  UUID) ``<id-N>``, ISO-8601 times ``<time>``, TOTP secrets in ``otpauth://``
  URIs ``<totp-secret-N>``, and the seconds of "retry in N s" ``<secs>``;
- by field name, in JSON: epoch milliseconds (13 digits) in ``*_ms`` / ``*_at``
  fields ``<ms>``, epoch seconds in ``exp`` / ``iat`` / ``nbf`` ``<epoch>``,
  ``duration_secs`` ``<secs>``, one-time codes (``mfa_code``), signing-key
  material (``kid``, ``x``, ``y``) and token ``hint``s ``<…-N>``, and
  ``next_page_token`` ``<page-token-N>`` (opaque by contract: its spelling may
  change, where it leads may not; a ``page_token=`` sent back reads the same);
- in headers, the values of ``X-RateLimit-Remaining``, ``X-RateLimit-Reset`` and
  ``Retry-After`` (their presence stays); ``Date``, ``Server`` and the framing
  (``Content-Length``, ``Transfer-Encoding``, ``Connection``) are left out.

Numbered placeholders name the N-th distinct value of their kind in the
transcript, so a value returned once and sent back later reads the same
(``/api/runs/<id-3>`` is the run ``<id-3>`` that ``POST …/run`` answered).
Zeros, ``null`` and every other value stay as they are.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from rest_helpers import Reply, Rest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("TRELLIS_GOLDEN_UPDATE") == "1"

# The transport's own headers: they say nothing about the API.
_DROPPED_HEADERS = frozenset(
    {"date", "server", "content-length", "transfer-encoding", "connection"}
)
# Headers whose value moves with the clock; that they are sent is the contract.
_PRESENCE_HEADERS = frozenset({"x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"})

_VALUE_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "jwt"),
    (re.compile(r"\btrl_(?:pat|mu|cs|rt|ac)_[0-9A-Za-z]{49}\b"), "trl"),
    (re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z])"), "id"),
    (
        re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}(?![0-9A-Za-z])"),
        "id",
    ),
    (re.compile(r"(?<=[?&]secret=)[A-Z2-7]+=*"), "totp-secret"),
]
_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?")
# Rate-limit messages say how long until the budget allows the next call.
_RETRY_IN = re.compile(r"(?<=retry in )\d+(?= s\b)")
_PAGE_TOKEN_PARAM = re.compile(r"(?<=[?&]page_token=)[^&#\s]+")
# Where a long JSON line is wrapped for reading: between the objects of an array.
_WRAP = re.compile(r"(?<=\},)(?= ?\{)")


@dataclass(frozen=True)
class _Field:
    """Values of these JSON keys become ``<kind>`` (``<kind-N>`` when numbered)."""

    pattern: re.Pattern[str]
    kind: str
    numbered: bool
    applies: Callable[[str], bool]


def _field(
    keys: str,
    kind: str,
    *,
    string: bool,
    numbered: bool = False,
    applies: Callable[[str], bool] = bool,
) -> _Field:
    # The key, its separator and the value's quotes are kept as they are.
    value = r'"(?P<value>[^"\\]*)"' if string else r"(?P<value>-?\d+)(?![\d.eE])"
    pattern = re.compile(rf'(?P<head>"(?:{keys})"\s*:\s*){value}')
    return _Field(pattern, kind, numbered, applies)


_FIELDS = [
    _field(r"[A-Za-z_]*(?:_ms|_at)", "ms", string=False, applies=lambda v: len(v) == 13),
    _field("exp|iat|nbf|auth_time", "epoch", string=False, applies=lambda v: v != "0"),
    _field("duration_secs", "secs", string=False),
    _field("mfa_code", "totp-code", string=True),
    _field("kid", "kid", string=True, numbered=True),
    _field("x|y", "key", string=True, numbered=True),
    _field("hint", "hint", string=True, numbered=True),
    _field("next_page_token", "page-token", string=True, numbered=True),
]

LEGEND = """\
# Recorded by tests/test_golden_rest.py; TRELLIS_GOLDEN_UPDATE=1 rewrites this file.
# Each exchange: "### METHOD path  (caller)", the request's own headers and body
# ("> "), then the answer's status, headers and body. "| " starts a line of the
# body, "|+" continues the line above it (a wrap for reading, not a newline); a
# body ends without a newline unless "\\ newline at end of body" follows it.
# <kind-N>, <ms>, <time>, ... stand for values that differ from run to run."""


class Transcript:
    """The recorded exchanges of one scenario, and the placeholders they share."""

    def __init__(self, base_url: str, title: str, common_headers: tuple[str, ...] = ()) -> None:
        """``common_headers`` are named once, with the value of the first answer, and
        then only where an answer lacks them or differs."""
        self.base_url = base_url
        self.title = title
        self.lines: list[str] = []
        self._common: dict[str, str | None] = dict.fromkeys(common_headers)
        self._names: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def client(self, caller: str, token: str = "") -> RecordingRest:
        """A REST client whose exchanges go into this transcript as made by ``caller``."""
        return RecordingRest(self, caller, token)

    def note(self, text: str) -> None:
        """A heading for the exchanges that follow."""
        self.lines.extend([f"## {text}", ""])

    @property
    def text(self) -> str:
        head = [f"# {self.title}", LEGEND]
        if self._common:
            head.append("# Every answer carries these headers unless it says otherwise:")
            head.extend(f"#   {name}: {value}" for name, value in self._common.items())
        return "\n".join([*head, "", *self.lines])

    # --- normalization -----------------------------------------------------------------

    def placeholder(self, kind: str, value: str) -> str:
        """``<kind-N>``: the same N for the same value of a kind, in order of appearance."""
        key = (kind, value)
        name = self._names.get(key)
        if name is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            name = self._names[key] = f"<{kind}-{self._counts[kind]}>"
        return name

    def normalize(self, text: str) -> str:
        for field in _FIELDS:
            text = field.pattern.sub(partial(self._field_value, field), text)
        for pattern, kind in _VALUE_PATTERNS:
            text = pattern.sub(partial(self._value, kind), text)
        text = _PAGE_TOKEN_PARAM.sub(self._page_token_sent_back, text)
        text = _RETRY_IN.sub("<secs>", text)
        return _ISO_TIME.sub("<time>", text)

    def _field_value(self, field: _Field, match: re.Match[str]) -> str:
        value = match["value"]
        if not field.applies(value):
            return match[0]
        shown = self.placeholder(field.kind, value) if field.numbered else f"<{field.kind}>"
        quote = '"' if match[0].endswith('"') else ""
        return f"{match['head']}{quote}{shown}{quote}"

    def _value(self, kind: str, match: re.Match[str]) -> str:
        value = match[0]
        if kind == "trl":  # one kind per prefix: trl_pat, trl_mu, ...
            kind = value[: value.index("_", 4)]
        return self.placeholder(kind, value)

    def _page_token_sent_back(self, match: re.Match[str]) -> str:
        return self._names.get(("page-token", match[0]), match[0])

    # --- recording ---------------------------------------------------------------------

    def record(
        self,
        caller: str,
        method: str,
        path: str,
        sent_headers: Mapping[str, str],
        sent: bytes | None,
        reply: Reply,
    ) -> None:
        lines = self.lines
        lines.append(f"### {method} {self.normalize(path)}  ({caller})")
        for name, value in sent_headers.items():
            if name.lower() != "authorization":
                lines.append(f"> {name}: {self.normalize(value)}")
        if sent:
            lines.extend(_wrapped(self.normalize(sent.decode()), ">"))
        lines.append(f"{reply.status}")
        lines.extend(self._headers(reply))
        body = self.normalize(reply.raw.decode("utf-8"))
        if not body:
            lines.append("(no body)")
        else:
            ends_in_newline = body.endswith("\n")
            for line in body.removesuffix("\n").split("\n"):
                lines.extend(_wrapped(line, "|"))
            if ends_in_newline:
                lines.append("\\ newline at end of body")
        lines.append("")

    def _headers(self, reply: Reply) -> list[str]:
        shown: list[str] = []
        for name, value in reply.headers.items():
            lowered = name.lower()
            if lowered in _DROPPED_HEADERS:
                continue
            value = "<present>" if lowered in _PRESENCE_HEADERS else self.normalize(value)
            common = next((c for c in self._common if c.lower() == lowered), None)
            if common is not None:
                if self._common[common] is None:
                    self._common[common] = value
                if self._common[common] == value:
                    continue
            shown.append(f"{name}: {value}")
        for common in self._common:
            if reply.headers.get(common) is None:
                shown.append(f"(without {common})")
        return shown


class RecordingRest(Rest):
    """A ``Rest`` client that writes every exchange into a transcript."""

    def __init__(self, transcript: Transcript, caller: str, token: str) -> None:
        super().__init__(transcript.base_url, token)
        self.transcript = transcript
        self.caller = caller

    def exchanged(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None, reply: Reply
    ) -> None:
        self.transcript.record(self.caller, method, path, headers, body, reply)


def _wrapped(line: str, prefix: str) -> list[str]:
    first, *rest = _WRAP.split(line)
    return [f"{prefix} {first}" if first else prefix, *(f"{prefix}+{part}" for part in rest)]


@contextmanager
def golden(
    base_url: str,
    scenario: str,
    title: str,
    backend: str,
    written: set[str],
    common_headers: tuple[str, ...] = (),
) -> Iterator[Transcript]:
    """A transcript for the scenario run in the ``with`` block, then compared with
    ``tests/golden/<scenario>.txt`` (or written to it).

    With ``TRELLIS_GOLDEN_UPDATE=1`` the first backend to run a scenario in this
    session writes its file; the others still compare with what it wrote, so two
    databases that answer differently fail even while updating. A scenario that
    stops on an unexpected answer shows how the exchanges up to it differ.
    """
    transcript = Transcript(base_url, title, common_headers)
    path = GOLDEN_DIR / f"{scenario}.txt"
    try:
        yield transcript
    except Exception as error:
        if path.exists() and not UPDATE:
            diff = _diff(path, transcript.text, backend, partial_run=True)
            if diff:
                pytest.fail(
                    f"the scenario stopped ({error!r}) after answers that differ from the "
                    f"golden file:\n{diff}",
                    pytrace=False,
                )
        raise
    actual = transcript.text
    if UPDATE and scenario not in written:
        written.add(scenario)
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_bytes(actual.encode())
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run with TRELLIS_GOLDEN_UPDATE=1 to write it")
    diff = _diff(path, actual, backend)
    if diff:
        pytest.fail(
            "the REST answers differ from the golden file (TRELLIS_GOLDEN_UPDATE=1 "
            f"rewrites it when the change is intended):\n{diff}",
            pytrace=False,
        )


def _diff(path: Path, actual: str, backend: str, *, partial_run: bool = False) -> str:
    """A unified diff of the golden file against ``actual`` ("" when they agree);
    ``partial_run`` compares only as far as ``actual`` goes."""
    expected = path.read_bytes().decode().split("\n")
    got = actual.split("\n")
    if partial_run:
        # The head of the file is complete only at the end of a run.
        expected, got = _exchanges(expected), _exchanges(got)
        expected = expected[: len(got)]
    if expected == got:
        return ""
    return "\n".join(
        difflib.unified_diff(
            expected,
            got,
            f"tests/golden/{path.name}",
            f"{path.stem} on {backend}",
            lineterm="",
            n=2,
        )
    )


def _exchanges(lines: list[str]) -> list[str]:
    start = next((i for i, line in enumerate(lines) if line.startswith("##")), len(lines))
    return lines[start:]
