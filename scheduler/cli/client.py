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
import random
import time
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import httpx

from scheduler.cli.context import Context, ContextError, load_context
from scheduler.cli.errors import EXIT_DENIED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, fail
from scheduler.cli.output import note, safe

__all__ = ["EXIT_BY_STATUS", "EXIT_SERVER", "ApiClient", "Page", "client", "token_problem"]

TIMEOUT_S = 30.0  # per request (CORRAL_TIMEOUT_S); connecting gets at most 5 s of it
EXIT_SERVER = 1  # the server answered 5xx (or something unexpected): not the user's mistake
RETRIES = 4
MAX_RETRY_WAIT_S = 30.0
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


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return safe(str(body["error"]))[:1000]
    text = safe(" ".join(response.text.split()))[:200]
    return f"HTTP {response.status_code} from the Corral API{': ' + text if text else ''}"


def token_problem(token: str) -> str | None:
    """Why `token` cannot go in an Authorization header, or None if it can."""
    for ch in token:
        if ch in "\r\n":
            return "a line break"
        if ch in " \t":
            return "a space"
        if not ch.isascii():
            return "a non-ASCII character"
        if not ch.isprintable():
            return "a control character"
    return None


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


def _timeout() -> httpx.Timeout:
    seconds = _env_number("CORRAL_TIMEOUT_S", TIMEOUT_S, float) or TIMEOUT_S
    return httpx.Timeout(seconds, connect=min(5.0, seconds))


def _wait_s(response: httpx.Response, attempt: int) -> float:
    backoff = 0.5 * 2.0**attempt
    try:
        asked = float(response.headers.get("Retry-After", "0"))
    except ValueError:
        asked = 0.0
    wait = min(MAX_RETRY_WAIT_S, max(backoff, asked))
    jitter: float = random.uniform(0, wait / 10)  # spread clients that were refused together
    return wait + jitter


class Page:
    """Items of one page and the cursor of the next (None: the last page)."""

    def __init__(self, items: list[Any], cursor: str | None) -> None:
        self.items = items
        self.cursor = cursor


class ApiClient:
    def __init__(self, ctx: Context, transport: httpx.BaseTransport | None = None) -> None:
        self.ctx = ctx
        headers: dict[str, str] = {}
        if ctx.token:
            problem = token_problem(ctx.token)
            if problem is not None:
                fail(
                    f"{ctx.token_source}: the token holds {problem}, which an HTTP header cannot carry: "
                    "copy the token again (`corral token create` prints it on one line)",
                    EXIT_DENIED,
                )
            headers["Authorization"] = f"Bearer {ctx.token}"
        timeout = _timeout()
        self.retries = int(_env_number("CORRAL_RETRIES", RETRIES, int))
        try:
            self._http = httpx.Client(
                base_url=ctx.api_url, headers=headers, timeout=timeout, transport=transport
            )
        except (httpx.InvalidURL, ValueError, TypeError):
            self._bad_url()

    def _bad_url(self) -> NoReturn:
        fail(
            f"CORRAL_API_URL: '{safe(self.ctx.api_url)[:80]}' is not a URL: use e.g. http://127.0.0.1:8470",
            EXIT_USAGE,
        )

    def close(self) -> None:
        self._http.close()

    def unreachable(self, exc: Exception) -> NoReturn:
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            self._bad_url()
        fail(
            f"cannot reach the Corral API at {safe(self.ctx.api_url)}: start it with `corral up` "
            f"(or set CORRAL_API_URL) [{type(exc).__name__}]",
            EXIT_UNREACHABLE,
        )

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        code = EXIT_BY_STATUS.get(response.status_code, EXIT_SERVER)
        message = _message(response)
        if response.status_code in (429, 503):
            message = f"{message} (gave up after {self.retries} retries)"
        elif code == EXIT_SERVER:
            message = f"the Corral API failed: {message}"
        fail(message, code)

    def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        """Send, retrying 429 and 503 answers (honouring Retry-After); the last response (not yet
        checked). A 503 means the server accepted nothing (its store is down, or it is a follower
        asked for a dry run), so it is always safe to send again."""
        for attempt in range(self.retries + 1):
            try:
                response = self._send_anywhere(request, stream)
            except httpx.TransportError as exc:
                self.unreachable(exc)
            if response.status_code not in (429, 503) or attempt == self.retries:
                return response
            response.read()
            wait = _wait_s(response, attempt)
            note(f"{_message(response)}: retrying in {wait:.0f} s")
            response.close()
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_anywhere(self, request: httpx.Request, stream: bool) -> httpx.Response:
        """Send to the current API URL, then to the context's other URLs in turn (replicated
        controllers) while one cannot be connected to, does not answer a repeatable request, or
        answers 503; later requests go straight to the one that answered."""
        current = str(self._http.base_url).rstrip("/")
        order = [current, *(u for u in self.ctx.api_urls if u != current)]
        built_on = current
        for i, url in enumerate(order):
            last = i == len(order) - 1
            if i:
                request.url, built_on = _rebased(request.url, url, built_on), url
            try:
                response = self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if last:
                    raise
                continue
            except httpx.ReadTimeout:
                # A replica that accepted the connection but does not answer (paused, overloaded):
                # safe to send elsewhere only what cannot act twice.
                if last or not _repeatable(request):
                    raise
                continue
            if response.status_code == 503 and not last:
                response.close()
                continue
            if i:
                self._http.base_url = httpx.URL(url)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

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
            request = self._http.build_request(method, path, params=params, json=json, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            self._bad_url()
        response = self._send(request)
        response.read()
        return self.check(response)

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
        timeout = httpx.Timeout(None, connect=5.0)
        try:
            request = self._http.build_request("GET", path, params=params, timeout=timeout)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            self._bad_url()
        response = self._send(request, stream=True)
        try:
            if not response.is_success:
                response.read()
                self.check(response)
            yield from response.iter_bytes()
        except httpx.TransportError as exc:
            self.unreachable(exc)
        finally:
            response.close()


def _repeatable(request: httpx.Request) -> bool:
    """Whether sending the request again cannot do anything twice (a read, or a keyed submission)."""
    return request.method in ("GET", "HEAD") or "Idempotency-Key" in request.headers


def _rebased(url: httpx.URL, base: str, built_on: str) -> httpx.URL:
    """`url`, built on the API base URL `built_on`, on another base URL."""
    old, new = httpx.URL(built_on), httpx.URL(base)
    path = url.raw_path[len(old.raw_path.rstrip(b"/")) :]
    return url.copy_with(
        scheme=new.scheme, host=new.host, port=new.port, raw_path=new.raw_path.rstrip(b"/") + path
    )


def client() -> ApiClient:
    """A client from the context (file + environment); exit 2 if the context file is broken."""
    try:
        ctx = load_context()
    except ContextError as exc:
        fail(str(exc))
    return ApiClient(ctx)
