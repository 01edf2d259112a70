"""The audit chain for admins, and the audit of denied requests.

    GET /v1/audit/head                              (admin) {"seq", "hash"} of the last record
    GET /v1/audit/chain?after_seq=N&since=T&limit=N (admin) [{"seq", "prev_hash", "hash",
        "canonical"}] in seq order, X-Next-Cursor: every record with what its hash covers, so a
        client checks the chain itself (`corral audit verify`, `corral audit export`) and never
        has to trust this server's word for it.

`AuditDenied` (a middleware, outermost) records every 401 and 403 answered on /v1 as an audit record
(decision `denied`): who (the token's team and id, the prefix of an unknown token, or "anonymous"),
what (method and path) and why (the error line). They are queued to the store's DeniedWriter, never
written on the request's path (scheduler/store/audit_log.py says why).
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

from typing import Annotated

from fastapi import FastAPI, Query, Request, Response
from pydantic import BaseModel, TypeAdapter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler.api.auth import Principal
from scheduler.api.body import quote
from scheduler.api.deps import Who, deps
from scheduler.api.errors import ApiError
from scheduler.api.ids import MAX_INT64
from scheduler.clock import Clock
from scheduler.model.audit_chain import GENESIS
from scheduler.model.records import AuditRecord
from scheduler.store.store import Store
from scheduler.store.token_store import prefix_of

__all__ = ["AuditDenied", "register"]

MAX_CHAIN_PAGE = 5000
_BODY_KEPT = 2048  # bytes of a denial's body read for its error line


class ChainEntryOut(BaseModel):
    seq: int
    prev_hash: str
    hash: str
    canonical: str  # the exact text whose sha256 the hash covers (README, "Audit")


class HeadOut(BaseModel):
    seq: int  # 0 while the chain is empty
    hash: str  # 64 zeros while the chain is empty


_CHAIN = TypeAdapter(list[ChainEntryOut])


def _admin_only(who: Principal) -> None:
    if not who.admin:
        raise ApiError(403, f"audit: only an admin may read the audit chain (team {quote(who.team, 40)})")


def register(app: FastAPI) -> None:
    @app.get("/v1/audit/head", response_model=HeadOut, tags=["audit"])
    def audit_head(request: Request, who: Who) -> HeadOut:
        """The last record of the audit chain (store it elsewhere: `corral audit verify --head`)."""
        _admin_only(who)
        found = deps(request).store.audit_head()
        seq, hash_ = found if found is not None else (0, GENESIS)
        return HeadOut(seq=seq, hash=hash_)

    @app.get("/v1/audit/chain", response_model=list[ChainEntryOut], tags=["audit"])
    def audit_chain(
        request: Request,
        who: Who,
        after_seq: Annotated[int, Query(ge=0, le=MAX_INT64, description="cursor: the last seq seen")] = 0,
        since: Annotated[
            float | None, Query(ge=0, description="start at the first record at or after")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_CHAIN_PAGE)] = 1000,
    ) -> Response:
        """Records of the chain in seq order, each with its hashes and canonical content."""
        _admin_only(who)
        entries = deps(request).store.audit_chain(after_seq=after_seq, limit=limit + 1, since=since)
        out = [ChainEntryOut(**e.as_json()) for e in entries[:limit]]
        response = Response(_CHAIN.dump_json(out), media_type="application/json")
        if len(entries) > limit:
            response.headers["X-Next-Cursor"] = str(entries[limit - 1].seq)
        return response


def _who(scope: Scope) -> str:
    principal = scope.get("state", {}).get("principal")
    if isinstance(principal, Principal):
        return f"{principal.team} (token {principal.token_id})"
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                shown = "".join(ch if ch.isprintable() and ch.isascii() else "?" for ch in prefix_of(token))
                return f"unknown token {shown}…"
            return "anonymous (not a bearer token)"
    return "anonymous"


def _error_line(body: bytes) -> str:
    import json

    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return " ".join(str(error).split())[:300] if error else ""


class AuditDenied:
    """Queue an audit record for every 401 and 403 answered on a /v1 path (see the module's doc)."""

    def __init__(self, app: ASGIApp, store: Store, clock: Clock) -> None:
        self.app = app
        self.store = store
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/v1" or path.startswith("/v1/")):
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status in (401, 403) and len(body) < _BODY_KEPT:
                body.extend(message.get("body", b"")[: _BODY_KEPT - len(body)])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            if status in (401, 403):
                what = f"{scope.get('method', '?')} {path[:200]}"
                why = _error_line(bytes(body))
                record = AuditRecord(
                    self.clock.now(),
                    "",
                    "denied",
                    detail=f"{status} {what}" + (f": {why}" if why else ""),
                    actor=_who(scope),
                )
                self.store.audit_denied(record)
