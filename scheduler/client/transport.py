"""HTTP to the Corral API, for the Python client and the CLI: failures are typed errors
(scheduler.client.errors), never a status code to check.

    cannot connect, DNS failure, time-out   → Unreachable
    429 or 503 after `retries` retries      → Unreachable (overloaded, store down, no controller ready)
    401, 403, a token a header cannot carry → PermissionDenied
    404                                     → NotFound
    400, 409, 413, 415, 422                 → InvalidSpec (`.field` from the server's answer)
    a malformed API URL                     → BadApiUrl (an Unreachable: nothing was sent)
    5xx, and any other unexpected status    → ServerError

429 and 503 are retried `retries` times, each after the server's Retry-After (at least the
exponential backoff 0.5, 1, 2, 4 s; at most 30 s): the request had not been processed, so a retry
cannot act twice. Replicated controllers: the other API URLs are tried in turn while one cannot be
connected to, answers 503, or (for a request that cannot act twice: a read, or a submission with
an Idempotency-Key) does not answer in time; later requests go straight to the one that answered.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

import httpx

from scheduler.client.errors import (
    BadApiUrl,
    CorralError,
    InvalidSpec,
    NotFound,
    PermissionDenied,
    ServerError,
    Unreachable,
    safe,
)

__all__ = ["MAX_RETRY_WAIT_S", "RETRIES", "TIMEOUT_S", "Transport", "retry_wait_s", "token_problem"]

TIMEOUT_S = 30.0  # per request; connecting gets at most 5 s of it
RETRIES = 4
MAX_RETRY_WAIT_S = 30.0

_ERROR_BY_STATUS: dict[int, type[CorralError]] = {
    400: InvalidSpec,
    401: PermissionDenied,
    403: PermissionDenied,
    404: NotFound,
    409: InvalidSpec,
    413: InvalidSpec,
    415: InvalidSpec,
    422: InvalidSpec,
    429: Unreachable,
    503: Unreachable,
}


def message_of(response: httpx.Response) -> str:
    """The server's one-line `error`, escaped; else a short description of the answer."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return safe(str(body["error"]))[:1000]
    text = safe(" ".join(response.text.split()))[:200]
    return f"HTTP {response.status_code} from the Corral API{': ' + text if text else ''}"


def _field_of(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    field = body.get("field") if isinstance(body, dict) else None
    return field if isinstance(field, str) else None


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


def retry_wait_s(response: httpx.Response, attempt: int) -> float:
    """Seconds before retry `attempt` (0-based): Retry-After, at least the backoff, at most 30 s."""
    backoff = 0.5 * 2.0**attempt
    try:
        asked = float(response.headers.get("Retry-After", "0"))
    except ValueError:
        asked = 0.0
    wait = min(MAX_RETRY_WAIT_S, max(backoff, asked))
    jitter: float = random.uniform(0, wait / 10)  # spread clients that were refused together
    return wait + jitter


class Transport:
    """One HTTP client over the API URLs `urls` (the first preferred), authenticated by `token`.

    `on_retry(message, wait_s)` is told of each 429/503 retry (the CLI prints it)."""

    def __init__(
        self,
        urls: Sequence[str],
        token: str | None = None,
        *,
        timeout_s: float = TIMEOUT_S,
        retries: int = RETRIES,
        token_source: str = "token",
        on_retry: Callable[[str, float], None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.urls = tuple(urls)
        self.retries = retries
        self.on_retry = on_retry
        headers: dict[str, str] = {}
        if token:
            problem = token_problem(token)
            if problem is not None:
                raise PermissionDenied(
                    f"{token_source}: the token holds {problem}, which an HTTP header cannot carry: "
                    "copy the token again (`corral token create` prints it on one line)"
                )
            headers["Authorization"] = f"Bearer {token}"
        timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
        try:
            self._http = httpx.Client(
                base_url=self.urls[0], headers=headers, timeout=timeout, transport=transport
            )
        except (httpx.InvalidURL, ValueError, TypeError):
            self._bad_url()

    @property
    def url(self) -> str:
        """The API URL in use (the one that last answered)."""
        return str(self._http.base_url).rstrip("/")

    def _bad_url(self) -> NoReturn:
        raise BadApiUrl(
            f"CORRAL_API_URL: '{safe(self.urls[0])[:80]}' is not a URL: use e.g. http://127.0.0.1:8470"
        )

    def close(self) -> None:
        self._http.close()

    def unreachable(self, exc: Exception) -> NoReturn:
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            self._bad_url()
        raise Unreachable(
            f"cannot reach the Corral API at {safe(self.urls[0])}: start it with `corral up` "
            f"(or set CORRAL_API_URL) [{type(exc).__name__}]"
        ) from exc

    def check(self, response: httpx.Response) -> httpx.Response:
        """The response if it succeeded; else its typed error (raised)."""
        if response.is_success:
            return response
        status = response.status_code
        kind = _ERROR_BY_STATUS.get(status, ServerError)
        message = message_of(response)
        if status in (429, 503):
            message = f"{message} (gave up after {self.retries} retries)"
        elif kind is ServerError:
            message = f"the Corral API failed: {message}"
        raise kind(message, status=status, field=_field_of(response))

    def _send(self, request: httpx.Request, stream: bool = False) -> httpx.Response:
        """Send, retrying 429 and 503 answers (honouring Retry-After); the last response (not yet
        checked). A 503 means the server accepted nothing (its store is down, or it has not seen
        the cluster yet), so it is always safe to send again."""
        for attempt in range(self.retries + 1):
            try:
                response = self._send_anywhere(request, stream)
            except httpx.TransportError as exc:
                self.unreachable(exc)
            if response.status_code not in (429, 503) or attempt == self.retries:
                return response
            response.read()
            wait = retry_wait_s(response, attempt)
            if self.on_retry is not None:
                self.on_retry(message_of(response), wait)
            response.close()
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_anywhere(self, request: httpx.Request, stream: bool) -> httpx.Response:
        current = self.url
        order = [current, *(u for u in self.urls if u != current)]
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
        """The (successful, read) response; a typed error otherwise."""
        try:
            request = self._http.build_request(method, path, params=params, json=json, headers=headers)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol):
            self._bad_url()
        response = self._send(request)
        response.read()
        return self.check(response)

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
