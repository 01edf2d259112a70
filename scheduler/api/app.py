"""The Corral HTTP API (FastAPI): what the `corral` CLI talks to.

Base path `/v1`; every route but `GET /healthz`, `/openapi.json` and `/docs` needs
`Authorization: Bearer <token>`. A token maps to a team (or an admin): a team sees and acts on its
own jobs only — another team's job is "not found", never "forbidden", so ids reveal nothing —
and an admin on all (admins may filter or submit for a team with `?team=`).

    POST /v1/jobs[?dry_run=true][&team=T]   body: JobSpec JSON; header Idempotency-Key (optional)
         201 Job (new) | 200 Job (the key's existing job) | 200 DryRun | 400/409/413/422 error
    GET  /v1/jobs?state=S&queue=Q&all=true&team=T&limit=N   [Job]  (default: jobs not finished)
    GET  /v1/jobs/{id}                      Job + history (events) + audit
    POST /v1/jobs/{id}/cancel               body {"grace_s": S} (optional) → 202 Job
    GET  /v1/jobs/{id}/events?after_seq=N   [Event]
    GET  /v1/jobs/{id}/logs?follow=B&offset=N   text/plain, streamed
    GET  /v1/queues                         [Queue]: quota, used, borrowed, pending, running
    GET  /v1/nodes                          [Node]: GPUs used/free, labels, state, jobs (own only)
    GET  /v1/history?limit=N&team=T         [Job + history], finished jobs, newest first
    GET  /v1/audit?job_id=ID&after_seq=N&limit=N   [Audit]
    GET  /v1/whoami                         {"team", "admin"}
    GET  /healthz                           {"status", "checks"} (no token)

Errors are always `{"error": "<one line naming the field and the fix>", "field": "<name>|null"}`:
401 bad token, 403 not allowed, 404 unknown job, 400 a spec that can never run here (from the
controller's check_spec), 409 idempotency conflict or nothing to cancel, 413 body over 64 KiB,
422 an invalid request (the first error only), 500 anything unexpected (logged, no traceback).

Submission order: body size → JSON and JobSpec validation → controller.check_spec → the group
commit (SubmitBatcher: concurrent submissions share one transaction; the reply waits for it) →
controller.wake(). Nothing is written unless every check passed. The other routes are sync (the
store is sync SQLAlchemy): FastAPI runs them in its threadpool.
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations (e.g. the local
# `Who` dependency) as objects, not strings.

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from pydantic import BaseModel, TypeAdapter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from scheduler import __version__
from scheduler.api import schemas as s
from scheduler.api.auth import Principal, TokenTable
from scheduler.api.errors import first_error
from scheduler.api.logs import log_path, stream_log
from scheduler.clock import Clock
from scheduler.control.view import ControllerHandle, SpecError
from scheduler.model.job import TERMINAL_STATES, JobSpec, JobState
from scheduler.store.batcher import SubmitBatcher
from scheduler.store.records import JobRecord
from scheduler.store.store import IdempotencyConflict, JobNotFound, Store

__all__ = ["MAX_BODY_BYTES", "TOKEN_HELP", "create_app"]

log = logging.getLogger("corral.api")

MAX_BODY_BYTES = 64 * 1024
TOKEN_HELP = "invalid or missing token: pass the token from `corral up` (context.yaml) or CORRAL_TOKEN"
ACTIVE_STATES = frozenset(JobState) - TERMINAL_STATES
HOLDING_STATES = frozenset({JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING})

_JOBS = TypeAdapter(list[s.JobOut])
_HISTORY = TypeAdapter(list[s.HistoryEntryOut])


class ApiError(Exception):
    """An error the client should see: status, one-line message, and the field it concerns."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def _error(status: int, message: str, field: str | None = None, **headers: str) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers or None)


def _json(
    value: BaseModel | list[Any], status: int = 200, adapter: TypeAdapter[Any] | None = None
) -> Response:
    """Serialize straight to JSON: the models were built from trusted records, no re-validation."""
    if isinstance(value, BaseModel):
        body = value.model_dump_json()
    else:
        assert adapter is not None
        body = adapter.dump_json(value).decode()
    return Response(content=body, status_code=status, media_type="application/json")


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
                await _error(413, self.message, "body")(scope, receive, send)
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


def create_app(
    store: Store,
    controller: ControllerHandle,
    tokens: TokenTable,
    log_dir: Path,
    clock: Clock,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> FastAPI:
    """The API over a store and the in-process controller. Build it once per process."""
    batcher = SubmitBatcher(store)  # group commit: concurrent submissions share one transaction

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        batcher.close()

    app = FastAPI(
        title="Corral API",
        version=__version__,
        description="Submit, list, cancel and follow training jobs on a Corral GPU cluster.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)

    # Prometheus scrapes without a token; the families are defined in scheduler/metrics.py.
    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    _install_error_handlers(app)
    bearer = HTTPBearer(auto_error=False, description="A token from the tokens file (context.yaml)")

    async def principal(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        # async on purpose: a pure lookup, not worth a threadpool hop per request
        who = tokens.lookup(creds.credentials if creds is not None else None)
        if who is None:
            raise ApiError(401, TOKEN_HELP)
        return who

    Who = Annotated[Principal, Depends(principal)]

    def visible(job_id: str, who: Principal) -> JobRecord:
        """The job if this caller may see it; 404 otherwise (also for another team's job)."""
        record = store.get(job_id) if job_id.isdecimal() and len(job_id) <= 19 else None
        if record is None or not who.may_see(record.team):
            raise ApiError(404, f"job {job_id} not found: check the id with `corral jobs --all`", "id")
        return record

    def team_filter(who: Principal, team: str | None) -> str | None:
        if who.admin:
            return team
        if team is not None and team != who.team:
            raise ApiError(403, f"team {team!r}: only an admin may act for another team", "team")
        return who.team

    def positions() -> dict[str, int]:
        return dict(controller.view().queue_positions)

    @app.get("/healthz", tags=["meta"])
    def healthz() -> dict[str, Any]:
        checks = dict(controller.health())
        ok = all(v == "ok" for v in checks.values())
        return {"status": "ok" if ok else "degraded", "checks": checks}

    @app.get("/v1/whoami", response_model=s.WhoAmIOut, tags=["meta"])
    async def whoami(who: Who) -> s.WhoAmIOut:
        return s.WhoAmIOut(team=who.team, admin=who.admin)

    @app.post(
        "/v1/jobs",
        status_code=201,
        tags=["jobs"],
        response_model=s.JobOut,
        responses={
            200: {"model": s.JobOut | s.DryRunOut, "description": "existing job (same key) or dry run"},
            400: {"model": s.ErrorOut},
            409: {"model": s.ErrorOut},
            413: {"model": s.ErrorOut},
            422: {"model": s.ErrorOut},
        },
    )
    async def submit(
        spec: JobSpec,
        who: Who,
        dry_run: bool = False,
        team: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
    ) -> Response:
        """Submit a job (or, with dry_run, say where it would go now without storing anything)."""
        owner = team_filter(who, team) or who.team
        if idempotency_key is not None:
            spec = spec.model_copy(update={"idempotency_key": idempotency_key})
        if not who.may_submit_to(spec.queue):
            allowed = ", ".join(sorted(who.queues or ()))
            raise ApiError(
                403,
                f"spec.queue: team {who.team!r} may not submit to {spec.queue!r}: use one of {allowed}",
                "queue",
            )
        try:
            spec = controller.check_spec(spec)
        except SpecError as exc:
            raise ApiError(400, f"spec.{exc.field}: {exc}", exc.field) from None
        if dry_run:  # runs decide(): CPU work, off the event loop
            return _json(s.dry_run_out(spec, await run_in_threadpool(controller.dry_run, spec, owner)))
        try:
            # async: the request waits for its group commit without holding a worker thread
            record, created = await asyncio.wrap_future(batcher.submit(spec, owner, clock.now()))
        except IdempotencyConflict:
            raise ApiError(
                409,
                f"spec.idempotency_key: {spec.idempotency_key!r} was used for a different spec — "
                "use a new key for a new job",
                "idempotency_key",
            ) from None
        if created:
            controller.wake()
        return _json(s.job_out(record, clock.now(), {}), 201 if created else 200)

    @app.get("/v1/jobs", response_model=list[s.JobOut], tags=["jobs"])
    def list_jobs(
        who: Who,
        state: Annotated[list[str] | None, Query(description="repeatable; case-insensitive")] = None,
        queue: str | None = None,
        all: bool = False,
        team: str | None = None,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> Response:
        """Jobs of the caller's team (an admin: every team's): not finished ones unless all=true."""
        states: Collection[JobState] | None = _parse_states(state) if state else None
        if states is None and not all:
            states = ACTIVE_STATES
        records = store.jobs(team=team_filter(who, team), queue=queue, states=states, limit=limit)
        now, pos = clock.now(), positions()
        return _json([s.job_out(r, now, pos) for r in records], adapter=_JOBS)

    @app.get("/v1/jobs/{job_id}", response_model=s.JobDetailOut, tags=["jobs"])
    def get_job(job_id: str, who: Who) -> Response:
        """One job with its history (events) and audit records."""
        record = visible(job_id, who)
        out = s.JobDetailOut(
            **s.job_fields(record, clock.now(), positions()),
            history=[s.event_out(e) for e in store.events(job_id)],
            audit=[s.audit_out(a) for a in store.audit(job_id)],
        )
        return _json(out)

    @app.post("/v1/jobs/{job_id}/cancel", status_code=202, response_model=s.JobOut, tags=["jobs"])
    def cancel(job_id: str, who: Who, body: s.CancelIn | None = None) -> Response:
        """Ask the controller to stop the job (SIGTERM, the grace period, then SIGKILL)."""
        record = visible(job_id, who)
        if record.state.terminal:
            raise ApiError(409, f"job {job_id} already finished ({record.state.value}): nothing to cancel")
        try:
            record = store.request_cancel(job_id, body.grace_s if body else None, clock.now())
        except JobNotFound:
            raise ApiError(404, f"job {job_id} not found", "id") from None
        controller.wake()
        return _json(s.job_out(record, clock.now(), positions()), 202)

    @app.get("/v1/jobs/{job_id}/events", response_model=list[s.EventOut], tags=["jobs"])
    def job_events(
        job_id: str,
        who: Who,
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[s.EventOut]:
        visible(job_id, who)
        return [s.event_out(e) for e in store.events(job_id, after_seq=after_seq, limit=limit)]

    @app.get(
        "/v1/jobs/{job_id}/logs",
        tags=["jobs"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/plain": {}}, "description": "the job's log bytes"}},
    )
    def job_logs(
        job_id: str,
        who: Who,
        follow: bool = False,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> StreamingResponse:
        """The job's log from `offset`; with follow, streamed until the job ends."""
        visible(job_id, who)

        def finished() -> bool:
            record = store.get(job_id)
            return record is None or record.state.terminal

        chunks = stream_log(log_path(log_dir, job_id), offset=offset, follow=follow, is_finished=finished)
        return StreamingResponse(chunks, media_type="text/plain; charset=utf-8")

    @app.get("/v1/queues", response_model=list[s.QueueOut], tags=["cluster"])
    def queues(who: Who) -> list[s.QueueOut]:
        return [s.queue_out(q) for q in controller.view().queues]

    @app.get("/v1/nodes", response_model=list[s.NodeOut], tags=["cluster"])
    def nodes(who: Who) -> list[s.NodeOut]:
        view = controller.view()
        mine: set[str] | None = None
        if not who.admin:  # a team sees every node, but only its own job ids on them
            mine = {r.id for r in store.jobs(team=who.team, states=HOLDING_STATES)}
        return [s.node_out(n, [j for j in n.jobs if mine is None or j in mine]) for n in view.nodes]

    @app.get("/v1/history", response_model=list[s.HistoryEntryOut], tags=["jobs"])
    def history(
        who: Who,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
        team: str | None = None,
    ) -> Response:
        """Finished jobs, newest first, each with its events."""
        records = store.jobs(
            team=team_filter(who, team), states=TERMINAL_STATES, limit=limit, newest_first=True
        )
        now = clock.now()
        out = [
            s.HistoryEntryOut(
                **s.job_fields(r, now, {}), history=[s.event_out(e) for e in store.events(r.id)]
            )
            for r in records
        ]
        return _json(out, adapter=_HISTORY)

    @app.get("/v1/audit", response_model=list[s.AuditOut], tags=["audit"])
    def audit(
        who: Who,
        job_id: str | None = None,
        after_seq: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[s.AuditOut]:
        """Placement decisions with their residency checks (a team: of its own jobs only)."""
        if job_id is not None:
            visible(job_id, who)
        records = store.audit(job_id, after_seq=after_seq, limit=limit)
        if not who.admin and job_id is None:
            mine = {r.id for r in store.jobs(team=who.team)}
            records = [a for a in records if a.job_id in mine]
        return [s.audit_out(a) for a in records]

    return app


def _parse_states(names: Sequence[str]) -> frozenset[JobState]:
    out: set[JobState] = set()
    for raw in names:
        for name in raw.split(","):
            try:
                out.add(JobState(name.strip().upper()))
            except ValueError:
                choices = ", ".join(s.value for s in JobState)
                raise ApiError(
                    422, f"state: unknown state {name!r} — use one of {choices}", "state"
                ) from None
    return frozenset(out)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return _error(exc.status, exc.message, exc.field, **headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        field, message = first_error(exc.errors())
        return _error(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such route {request.method} {request.url.path}: see /docs"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}: see /docs"
        return _error(exc.status_code, message, "body" if exc.status_code == 413 else None)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal error: see the controller log")
