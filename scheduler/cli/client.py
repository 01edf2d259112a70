"""The CLI's HTTP client: every failure becomes one line on stderr and a documented exit code.

    cannot connect / time out          → 5 (start it with `corral up`, or set CORRAL_API_URL)
    401, 403                           → 4 (permission denied)
    404                                → 3 (not found)
    400, 409, 413, 422                 → 2 (usage or validation error)
    5xx and anything else unexpected   → 5 (the server failed; see the controller log)

The server's errors are `{"error": "...", "field": ...}`; the CLI prints the `error` line as is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

import httpx

from scheduler.cli.context import Context, ContextError, load_context
from scheduler.cli.errors import EXIT_DENIED, EXIT_NOT_FOUND, EXIT_UNREACHABLE, EXIT_USAGE, fail

__all__ = ["ApiClient", "client"]

TIMEOUT = httpx.Timeout(30.0, connect=5.0)

_EXIT_BY_STATUS = {
    400: EXIT_USAGE,
    401: EXIT_DENIED,
    403: EXIT_DENIED,
    404: EXIT_NOT_FOUND,
    409: EXIT_USAGE,
    413: EXIT_USAGE,
    422: EXIT_USAGE,
}


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    text = " ".join(response.text.split())[:200]
    return f"HTTP {response.status_code} from the Corral API{': ' + text if text else ''}"


class ApiClient:
    def __init__(self, ctx: Context, transport: httpx.BaseTransport | None = None) -> None:
        self.ctx = ctx
        headers = {"Authorization": f"Bearer {ctx.token}"} if ctx.token else {}
        self._http = httpx.Client(base_url=ctx.api_url, headers=headers, timeout=TIMEOUT, transport=transport)

    def close(self) -> None:
        self._http.close()

    def unreachable(self, exc: Exception) -> NoReturn:
        fail(
            f"cannot reach the Corral API at {self.ctx.api_url}: start it with `corral up` "
            f"(or set CORRAL_API_URL) [{type(exc).__name__}]",
            EXIT_UNREACHABLE,
        )

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.is_success:
            return response
        code = _EXIT_BY_STATUS.get(response.status_code, EXIT_UNREACHABLE)
        message = _message(response)
        if response.status_code >= 500:
            message = f"the Corral API failed: {message}"
        fail(message, code)

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
            response = self._http.request(method, path, params=params, json=json, headers=headers)
        except httpx.TransportError as exc:
            self.unreachable(exc)
        return self.check(response)

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def post(self, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
             headers: Mapping[str, str] | None = None) -> httpx.Response:  # fmt: skip
        return self.request("POST", path, json=body, params=params, headers=headers)

    def stream(self, path: str, **params: Any) -> Iterator[bytes]:
        """The response body as it arrives (no read timeout: a followed log may be quiet a long time)."""
        timeout = httpx.Timeout(None, connect=5.0)
        try:
            with self._http.stream("GET", path, params=params, timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    self.check(response)
                yield from response.iter_bytes()
        except httpx.TransportError as exc:
            self.unreachable(exc)


def client() -> ApiClient:
    """A client from the context (file + environment); exit 2 if the context file is broken."""
    try:
        ctx = load_context()
    except ContextError as exc:
        fail(str(exc))
    return ApiClient(ctx)
