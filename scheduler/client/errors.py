"""The Python client's errors: one class per thing a caller handles differently.

    CorralError        the base of all of them: `.status` (the HTTP status, if one came) and `.field`
    ├─ NotFound          404: no such job (or another team's: a team sees only its own)
    ├─ PermissionDenied  401/403, or a token an HTTP header cannot carry: bad, revoked, not allowed
    ├─ InvalidSpec       400/409/413/415/422: the request (usually the job spec) is wrong; `.field`
    │                    names the field when the server (or the client's own check) knows it
    ├─ Unreachable       cannot connect, time-out, a malformed API URL, or 429/503 still after retries
    └─ ServerError       5xx (other than 503) or any other unexpected status: see the controller log

The message is the server's `error` line, with control characters escaped (safe to print).
"""

from __future__ import annotations

import re

__all__ = [
    "BadApiUrl",
    "CorralError",
    "InvalidSpec",
    "NotFound",
    "PermissionDenied",
    "ServerError",
    "Unreachable",
    "safe",
]


class CorralError(Exception):
    """A request to the Corral API failed; `str()` is one line, safe to print."""

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.field = field


class NotFound(CorralError):
    """404: no such job, node or token visible to this token."""


class PermissionDenied(CorralError):
    """401 or 403: a bad, revoked or unsendable token, or a route this token may not use."""


class InvalidSpec(CorralError):
    """400, 409, 413, 415 or 422: the request is wrong (`.field` names what, when known)."""


class Unreachable(CorralError):
    """No API answered (connection refused, DNS, time-out, bad URL), or it still answered 429/503
    (overloaded, store down, no controller ready) after the retries."""


class BadApiUrl(Unreachable):
    """The API URL is not a URL (e.g. a typo in CORRAL_API_URL): nothing was sent."""


class ServerError(CorralError):
    """The server failed (5xx other than 503, or an unexpected status)."""


# C0 and C1 controls, DEL, and the Unicode format characters that reorder or hide text (bidi
# overrides, zero-width joiners): each is shown as an escape instead of acting on a terminal.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def safe(text: object) -> str:
    """`text` with every control character escaped (`\\x1b`, `\\n`, ...): safe to print."""
    return _UNSAFE.sub(_escape, str(text))
