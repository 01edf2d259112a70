"""The CLI's HTTP client: every failure becomes one line on stderr and a documented exit code.

    cannot connect, DNS failure, time-out   → 5 (start it with `corral up`, or set CORRAL_API_URL)
    429 after RETRIES retries               → 5 (the server is overloaded for this token: later)
    401, 403                                → 4 (bad/revoked token, or not allowed)
    a token that cannot be sent             → 4 (a newline or other character not allowed in a
                                                 header: the server is never contacted)
    404                                     → 3 (not found)
    400, 409, 413, 415, 422                 → 2 (usage or validation error)
    a malformed CORRAL_API_URL              → 2
    5xx, and any other unexpected status    → 1 (the server failed; see the controller log)

429 (too many requests, or too many log followers) is retried RETRIES times (CORRAL_RETRIES, default
4), each after the server's Retry-After (at least the exponential backoff 0.5, 1, 2, 4 s; at most
30 s): the request had not been processed, so retrying a submission cannot duplicate it. A request
times out after CORRAL_TIMEOUT_S (default 30) seconds without an answer (→ 5); a followed log has
no read time-out.

The server's errors are `{"error": "...", "field": ...}`; the CLI prints the `error` line with
control characters escaped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import httpx

from scheduler.cli.context import Context, ContextError, load_context
from scheduler.cli.errors import EXIT_DENIED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, fail
from scheduler.cli.output import note, safe
from scheduler.client.errors import (
    BadApiUrl,
    CorralError,
    InvalidSpec,
    NotFound,
    PermissionDenied,
    Unreachable,
)
from scheduler.client.transport import RETRIES, TIMEOUT_S, Transport, token_problem

__all__ = ["EXIT_BY_STATUS", "EXIT_SERVER", "ApiClient", "Page", "client", "token_problem"]

EXIT_SERVER = 1  # the server answered 5xx (or something unexpected): not the user's mistake
NEXT_CURSOR = "X-Next-Cursor"
PAGE_SIZE = 1000  # the API's largest page

EXIT_BY_STATUS = {
    400: EXIT_USAGE,
    401: EXIT_DENIED,
    403: EXIT_DENIED,
    404: EXIT_NOT_FOUND,
    409: EXIT_USAGE,
    413: EXIT_USAGE,
    415: EXIT_USAGE,
    422: EXIT_USAGE,
    429: EXIT_UNREACHABLE,
    503: EXIT_UNREACHABLE,
}


def exit_code(error: CorralError) -> int:
    """The CLI's exit code for a client error (see the table above)."""
    if isinstance(error, BadApiUrl):
        return EXIT_USAGE
    if isinstance(error, Unreachable):
        return EXIT_UNREACHABLE
    if isinstance(error, PermissionDenied):
        return EXIT_DENIED
    if isinstance(error, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(error, InvalidSpec):
        return EXIT_USAGE
    return EXIT_SERVER


def _env_number(name: str, default: float, kind: type[int] | type[float]) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if not 0 <= value < 1e6:
        fail(f"{name}: must be a number ≥ 0 (got '{safe(raw)[:40]}')")
    return value


class Page:
    """Items of one page and the cursor of the next (None: the last page)."""

    def __init__(self, items: list[Any], cursor: str | None) -> None:
        self.items = items
        self.cursor = cursor


def _retrying(message: str, wait_s: float) -> None:
    note(f"{message}: retrying in {wait_s:.0f} s")


class ApiClient:
    """The Python client's transport (scheduler.client.transport), its typed errors turned into one
    line on stderr and the exit code of the table above."""

    def __init__(self, ctx: Context, transport: httpx.BaseTransport | None = None) -> None:
        self.ctx = ctx
        seconds = _env_number("CORRAL_TIMEOUT_S", TIMEOUT_S, float) or TIMEOUT_S
        self.retries = int(_env_number("CORRAL_RETRIES", RETRIES, int))
        try:
            self._http = Transport(
                ctx.api_urls,
                ctx.token,
                timeout_s=seconds,
                retries=self.retries,
                token_source=ctx.token_source,
                on_retry=_retrying,
                transport=transport,
            )
        except CorralError as exc:
            self.fail(exc)

    @staticmethod
    def fail(error: CorralError) -> NoReturn:
        fail(str(error), exit_code(error))

    def close(self) -> None:
        self._http.close()

    def unreachable(self, exc: Exception) -> NoReturn:
        try:
            self._http.unreachable(exc)
        except CorralError as error:
            self.fail(error)

    def check(self, response: httpx.Response) -> httpx.Response:
        try:
            return self._http.check(response)
        except CorralError as error:
            self.fail(error)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            return self._http.request(method, path, params=params, json=json, headers=headers)
        except CorralError as error:
            self.fail(error)

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def page(self, path: str, **params: Any) -> Page:
        clean = {k: v for k, v in params.items() if v is not None}
        response = self.request("GET", path, params=clean)
        return Page(list(response.json()), response.headers.get(NEXT_CURSOR))

    def pages(
        self, path: str, limit: int, cursor_param: str = "after", page_size: int = PAGE_SIZE, **params: Any
    ) -> tuple[list[Any], bool]:
        """Up to `limit` items, following X-Next-Cursor; (items, whether more exist)."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            size = min(page_size, limit - len(items))
            page = self.page(path, limit=size, **params, **({cursor_param: cursor} if cursor else {}))
            items += page.items
            if page.cursor is None:
                return items, False
            if len(items) >= limit:
                return items, True
            cursor = page.cursor

    def post(self, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> httpx.Response:  # fmt: skip
        return self.request("POST", path, json=body, params=params, headers=headers)

    def delete(self, path: str) -> httpx.Response:
        return self.request("DELETE", path)

    def stream(self, path: str, **params: Any) -> Iterator[bytes]:
        """The response body as it arrives (no read timeout: a followed log may be quiet a long time)."""
        try:
            yield from self._http.stream(path, **params)
        except CorralError as error:
            self.fail(error)


def client() -> ApiClient:
    """A client from the context (file + environment); exit 2 if the context file is broken."""
    try:
        ctx = load_context()
    except ContextError as exc:
        fail(str(exc))
    return ApiClient(ctx)
