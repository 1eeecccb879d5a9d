"""The form of a URL that Trellis is to call back.

Registration judges the form only. Where a URL points (loopback, private,
link-local, the cloud metadata address) is judged when a callback is
delivered, on the address the host resolves to then: a name may resolve
elsewhere tomorrow, and ``2130706433`` or ``0x7f.1`` are 127.0.0.1 only to
the resolver.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from trellis.server.core.errors import InvalidArgument

MAX_CALLBACK_URL: Final = 2048
_SCHEMES: Final = frozenset({"http", "https"})


def check_callback_url(url: str, field: str = "callbackUrl") -> None:
    """Raises ``InvalidArgument`` naming ``field`` unless ``url`` is an absolute
    http(s) URL with a host, without credentials or a fragment."""
    if not url:
        raise InvalidArgument(f"{field}: required")
    if len(url) > MAX_CALLBACK_URL:
        raise InvalidArgument(f"{field}: at most {MAX_CALLBACK_URL} characters")
    # URL parsers disagree on spaces, controls, backslashes and non-ASCII text
    # (urlsplit drops tabs and newlines, browsers read "\" as "/"): what one of
    # them calls the host another may not.
    if not url.isascii() or any(ch <= " " or ch in "\x7f\\" for ch in url):
        raise InvalidArgument(
            f"{field}: spaces, control characters, backslashes and non-ASCII characters "
            "must be percent-encoded (hosts in punycode)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"{field}: not a URL ({exc})") from None
    if parts.scheme not in _SCHEMES:
        raise InvalidArgument(f"{field}: must be an http or https URL")
    if "@" in parts.netloc:
        raise InvalidArgument(f"{field}: must not carry credentials (user:password@)")
    if not parts.hostname:
        raise InvalidArgument(f"{field}: must name a host")
    if port == 0:
        raise InvalidArgument(f"{field}: port 0 is not a port")
    if "#" in url:
        raise InvalidArgument(f"{field}: must not have a fragment (#…)")
