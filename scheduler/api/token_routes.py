"""Token routes (admins only): create (the token is shown once), list (never a secret), revoke."""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

import logging
from typing import Annotated

from fastapi import FastAPI, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from scheduler.api import schemas as s
from scheduler.api.auth import Principal
from scheduler.api.body import BodyError, parse_json, quote
from scheduler.api.deps import Deps, Who, deps
from scheduler.api.errors import ApiError, first_error
from scheduler.api.ids import canonical_id
from scheduler.store.token_store import TokenNotFound

__all__ = ["register"]

log = logging.getLogger("corral.api")

_TOKENS = TypeAdapter(list[s.TokenOut])
_TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": s.TokenIn.model_json_schema()}},
    }
}


def _admin_only(who: Principal) -> None:
    if not who.admin:
        raise ApiError(
            403, f"tokens: only an admin may manage tokens (this is a token of team {quote(who.team, 40)})"
        )


def _token_in(d: Deps, raw: bytes, content_type: str | None) -> s.TokenIn:
    try:
        data = parse_json(raw, content_type, "the token request")
    except BodyError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from None
    try:
        new = s.TokenIn.model_validate(data)
    except ValidationError as exc:
        field, message = first_error(exc.errors(include_url=False), "token", s.TokenIn.model_fields)
        raise ApiError(422, message, field) from None
    limited = new.queues or new.max_priority or new.allow_protection or new.max_gpus_per_job
    if new.admin and limited:
        raise ApiError(
            422,
            "token.admin: an admin token has no limits: drop --queues, --max-priority, --max-gpus and "
            "--allow-non-preemptible, or drop --admin",
            "admin",
        )
    view = d.controller.view()
    queues = {q.queue.name for q in view.queues}
    for name in new.queues or ():
        if name not in queues:
            raise ApiError(
                422, f"token.queues: unknown queue {name!r}: use one of {', '.join(sorted(queues))}", "queues"
            )
    classes = {p.name for p in view.priority_classes}
    if new.max_priority is not None and new.max_priority not in classes:
        raise ApiError(
            422,
            f"token.max_priority: unknown priority class {new.max_priority!r}: use one of "
            f"{', '.join(sorted(classes))}",
            "max_priority",
        )
    return new


def register(app: FastAPI) -> None:
    @app.post(
        "/v1/tokens",
        status_code=201,
        response_model=s.TokenCreatedOut,
        tags=["tokens"],
        openapi_extra=_TOKEN_BODY,
        responses={code: {"model": s.ErrorOut} for code in (403, 413, 415, 422)},
    )
    async def create_token(request: Request, who: Who) -> Response:
        """A new token for a team (or an admin). The response holds the token: it is never shown again."""
        _admin_only(who)
        d = deps(request)
        new = _token_in(d, await request.body(), request.headers.get("content-type"))
        token, record = await run_in_threadpool(
            lambda: d.tokens.create(
                new.team,
                admin=new.admin,
                limits=new.limits,
                description=new.description,
                created_by=f"{who.team} (token {who.token_id})",
                now=d.clock.now(),
            )
        )
        d.cache.invalidate()
        log.info(
            "token %s (%s) created for team %s by token %s",
            record.id,
            record.prefix,
            record.team,
            who.token_id,
        )
        return Response(
            s.token_created_out(record, token).model_dump_json(), 201, media_type="application/json"
        )

    @app.get("/v1/tokens", response_model=list[s.TokenOut], tags=["tokens"])
    def list_tokens(request: Request, who: Who) -> Response:
        """Every token (revoked ones too), without the tokens themselves."""
        _admin_only(who)
        out = [s.token_out(t) for t in deps(request).tokens.list()]
        return Response(_TOKENS.dump_json(out), media_type="application/json")

    @app.delete(
        "/v1/tokens/{token_id}",
        response_model=s.TokenOut,
        tags=["tokens"],
        responses={code: {"model": s.ErrorOut} for code in (403, 404, 409)},
    )
    def revoke_token(
        request: Request, who: Who, token_id: Annotated[str, PathParam(description="the token's id")]
    ) -> Response:
        """Revoke a token: from now on it authenticates nothing (revoking again changes nothing)."""
        _admin_only(who)
        d = deps(request)
        canonical = canonical_id(token_id)
        missing = ApiError(
            404, f"token {quote(token_id, 40)} not found: see the ids with `corral token list`", "id"
        )
        current = d.tokens.get(canonical) if canonical is not None else None
        if current is None:
            raise missing
        if current.admin and current.active and d.tokens.active_admins() <= 1:
            raise ApiError(
                409,
                f"token {current.id} is the last admin token: create another first "
                "(`corral token create --admin --team admin`), then revoke this one",
                "id",
            )
        try:
            record = d.tokens.revoke(current.id, d.clock.now(), by=f"{who.team} (token {who.token_id})")
        except TokenNotFound:
            raise missing from None
        d.cache.invalidate()
        log.info(
            "token %s (%s) of team %s revoked by token %s",
            record.id,
            record.prefix,
            record.team,
            who.token_id,
        )
        return Response(s.token_out(record).model_dump_json(), media_type="application/json")
