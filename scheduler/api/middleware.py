"""The two gates every request passes before a route sees it, outermost first:

1. `Authenticate` (every /v1 path): the bearer token → a Principal on `request.state.principal`,
   else 401; then the token's request rate, else 429 with Retry-After. It runs before anything
   reads or judges the body, so a wrong token gets 401 whatever it sends.
2. `BodyLimit`: bodies over the limit → 413, by Content-Length or while reading a chunked body.
"""

from __future__ import annotations

import anyio
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.auth import Principal, TokenCache
from scheduler.api.limits import RateLimiter, retry_after
from scheduler.store.errors import unavailable

__all__ = ["Authenticate", "BodyLimit", "error_response"]


def error_response(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers or None)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


STORE_RETRY_AFTER_S = 2  # what a client is told to wait while the store is unavailable


def store_unavailable(why: str) -> JSONResponse:
    """503 while the store cannot be used: fail closed — nothing is accepted that is not committed."""
    return error_response(
        503,
        f"the store is unavailable ({why}): nothing new was accepted; retry (a submission with an "
        "Idempotency-Key is safe to retry)",
        None,
        **{"Retry-After": str(STORE_RETRY_AFTER_S)},
    )


class Authenticate:
    """401 without an active token, 429 over the token's rate (admins exempt) — for /v1 paths."""

    def __init__(self, app: ASGIApp, cache: TokenCache, limiter: RateLimiter, token_help: str) -> None:
        self.app = app
        self.cache = cache
        self.limiter = limiter
        self.token_help = token_help

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        who: Principal | None = None
        if token is not None:
            hit, who = self.cache.cached(token)
            if not hit:  # a store query: off the event loop
                try:
                    who = await anyio.to_thread.run_sync(self.cache.lookup, token)
                except Exception as exc:
                    why = unavailable(exc)
                    if why is None:
                        raise
                    await store_unavailable(why)(scope, receive, send)
                    return
        if who is None:
            response = error_response(401, self.token_help, None, **{"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if not who.admin:
            wait = self.limiter.take(who.token_id)
            if wait > 0:
                seconds = retry_after(wait)
                message = (
                    f"too many requests: this token may send {self.limiter.rate:g} requests/s "
                    f"(bursts of {self.limiter.burst}): retry after {seconds} s"
                )
                await error_response(429, message, None, **{"Retry-After": seconds})(scope, receive, send)
                return
        scope.setdefault("state", {})["principal"] = who
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over `max_bytes` with 413 before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = (
            f"body: request body is larger than the {max_bytes // 1024} KiB limit — "
            "shorten the spec (e.g. fewer or shorter env values)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await error_response(413, self.message, "body")(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # FastAPI re-raises an HTTPException met while reading the body: it becomes our 413.
                raise StarletteHTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)
