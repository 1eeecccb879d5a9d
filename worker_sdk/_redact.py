"""Masks known secret values in what a job writes before it leaves the worker."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "***"
# Masking shorter values would mangle ordinary text wherever it occurs.
MIN_SECRET_CHARS = 4


class Redactor:
    """Replaces every occurrence of a known secret with ``***``.

    A secret that spans lines is matched line by line, since shell jobs' logs
    arrive a line at a time.
    """

    __slots__ = ("_pattern", "_secrets")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        pieces = {line.rstrip("\r") for secret in secrets for line in secret.split("\n")}
        # Longest first: of two secrets where one contains the other, the
        # longer is masked whole.
        self._secrets = tuple(
            sorted((p for p in pieces if len(p) >= MIN_SECRET_CHARS), key=len, reverse=True)
        )
        self._pattern = (
            re.compile("|".join(map(re.escape, self._secrets))) if self._secrets else None
        )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        """``text`` with each secret in it masked."""
        if self._pattern is None or not self._occurs_in(text):
            return text
        return self._pattern.sub(MASK, text)

    def _occurs_in(self, text: str) -> bool:
        # Plain substring tests are several times faster than the pattern,
        # and almost no line holds a secret.
        return any(secret in text for secret in self._secrets)

    def split(self, text: str) -> tuple[str, str]:
        """``(ready, held)``: ``text`` masked, minus an end that may be the
        beginning of a secret the next write completes.

        Joining ``held`` with the next write before splitting that masks a
        secret written in two pieces.
        """
        if self._pattern is None:
            return text, ""
        if text.endswith("\n"):
            # No secret line holds a newline, so none can begin in this end.
            return self.redact(text), ""
        last_end = 0
        parts: list[str] = []
        if self._occurs_in(text):
            for match in self._pattern.finditer(text):
                parts.append(text[last_end : match.start()])
                parts.append(MASK)
                last_end = match.end()
        tail = text[last_end:]
        held = self._open_prefix(tail)
        parts.append(tail[: len(tail) - held])
        return "".join(parts), tail[len(tail) - held :]

    def _open_prefix(self, tail: str) -> int:
        """The length of the longest end of ``tail`` that a secret starts with."""
        longest = 0
        for secret in self._secrets:
            # Only where the secret's first character occurs can it begin.
            i = tail.find(secret[0], max(0, len(tail) - len(secret) + 1))
            while i != -1 and len(tail) - i > longest:
                if secret.startswith(tail[i:]):
                    longest = len(tail) - i
                    break
                i = tail.find(secret[0], i + 1)
        return longest
