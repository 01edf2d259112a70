"""The Corral HTTP API (FastAPI): what the `corral` CLI talks to.

Base path `/v1`; every /v1 route needs `Authorization: Bearer <token>` (`GET /healthz`, `/metrics`,
`/openapi.json` and `/docs` do not). Tokens live in the store, hashed, and are managed by admins
(`/v1/tokens`, `corral token ...`). A token maps to a team and its limits: a team sees and acts on
its own jobs only — another team's job is "not found", never "forbidden", so ids reveal nothing —
and an admin on all (admins may filter or submit for a team with `?team=`).

    POST   /v1/jobs[?dry_run=true][&team=T]  body: JobSpec JSON; header Idempotency-Key (optional)
           201 Job (new) | 200 Job (the key's existing job) | 200 DryRun
           | 201/200 Array {"array_id", "array", "max_running", "tasks": [Job]} for a spec with `array`
           | 400/403/409/413/415/422/429 error
    GET    /v1/jobs?state=S&queue=Q&all=true&team=T&limit=N&after=ID   [Job] by id (default: unfinished)
    GET    /v1/jobs/{id}                      Job + history (events) + audit (first 1,000 of each)
    POST   /v1/jobs/{id}/cancel               body {"grace_s": S} (optional) → 202 Job
    GET    /v1/arrays/{id}                    a job array (POST /v1/jobs with `array`) and its tasks
    POST   /v1/arrays/{id}/cancel             body {"grace_s": S} (optional) → 202: every unfinished task
    GET    /v1/jobs/{id}/events?after_seq=N&limit=N   [Event]
    GET    /v1/jobs/{id}/logs?follow=B&offset=N       text/plain, streamed (follow: until the job ends)
    GET    /v1/queues                         [Queue]: quota, used, borrowed, pending, running
    GET    /v1/nodes                          [Node]: GPUs used/free, labels, state, jobs (own only)
    GET    /v1/history?limit=N&after=ID&team=T   [Job + history], finished jobs, newest first
    GET    /v1/audit?job_id=ID&after_seq=N&limit=N&team=T   [Audit]
    GET    /v1/audit/head                     (admin) {"seq", "hash"}: the audit chain's last record
    GET    /v1/audit/chain?after_seq=N&since=T&limit=N  (admin) [{"seq", "prev_hash", "hash",
                                              "canonical"}]: the chain, for client-side checks
    GET    /v1/state?recent_s=S               (admin) the last cycle's scheduling state, configuration,
                                              finished runtimes and recent submissions (what-if)
    GET    /v1/whoami                         {"team", "admin", "token_id", limits}
    POST   /v1/tokens                         (admin) body TokenIn → 201 with the token, shown once
    GET    /v1/tokens                         (admin) [Token]: never the token nor its digest
    DELETE /v1/tokens/{id}                    (admin) revoke → 200 Token; at once for new requests
    POST   /v1/nodes/{node}/cordon            (admin) body {"reason"} (optional): no new jobs there
    POST   /v1/nodes/{node}/uncordon          (admin) take new jobs again; 409 if not cordoned
    GET    /healthz                           readiness: {"status", "checks", "leader", "epoch",
                                              "leader_url"}; 503 if a check fails (followers too)
    GET    /livez                             liveness: 200 while the process serves (no token)

Ids: a job (or token) id is a decimal of at most 19 digits ≤ 2^63−1; leading zeros name the same
job (`007` is job 7). Anything else (`abc`, `-1`, `1e3`, 2^63) is 404, like an unknown job.

Pages: lists, history, events and audit return at most `limit` items (default 100, at most 1,000).
When there may be more, the response has an `X-Next-Cursor` header: pass its value as `after`
(jobs, history: the last job id; history continues with older jobs) or `after_seq` (events,
audit: the last seq) to get the next page. Cursors and log offsets are 0 to 2^63−1 (422 beyond); a
log offset past the end gives an empty body. Team filters run in the query, so pages are full.

Limits (flags of `corral serve`): bodies ≤ 64 KiB (413); per token 50 requests/s with bursts of
200 (429 with Retry-After; admin tokens are exempt) and 8 concurrent log followers (429 with
Retry-After). A token may also be limited to queues, a highest priority class, protection from
preemption (`preemptible: false`, or `min_runtime_s` above the policy default) and GPUs per job:
a submission beyond them is 403 naming the field and the limit.

Errors are always `{"error": "<one line naming the field and the fix>", "field": "<name>|null"}`:
401 bad, revoked or missing token, 403 not allowed (a token's limit, another team, not an admin),
404 unknown job or token, 400 a spec that can never run here (from the controller's check_spec),
409 idempotency conflict, nothing to cancel or the last admin token, 413 body over 64 KiB, 415 a
body that is not JSON, 422 an invalid request (the first error only; a bad value is quoted to at
most 40 characters), 429 too many requests or followers, 500 anything unexpected (logged, no
traceback).

Request order: token (the Authenticate middleware: 401, then the rate limit: 429) → body size
(413) → content type (415) → strict JSON (422: UTF-8, no duplicate keys, no NaN/Infinity/1e309)
→ JobSpec.submitted (422) → Idempotency-Key header vs body (422) → the token's limits (403) →
controller.check_spec (400; its returned spec is what is stored) → the group commit (SubmitBatcher:
concurrent submissions share one transaction) → controller.wake(). Nothing is written unless every
check passed. The read routes are sync (the store is sync SQLAlchemy): FastAPI runs them in its
threadpool. Log followers are async (see logs.py).

Another team's job never shows through history, audit or events: an entry's `private_detail` and
`related_job` (e.g. which job preempted this one) are shown only to an admin or to the team owning
`related_job`; `/v1/nodes` shows a team only its own job ids.
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from scheduler import __version__
from scheduler.api import array_routes, audit_routes, jobs_routes, node_routes, state_routes, token_routes
from scheduler.api import schemas as s
from scheduler.api.audit_routes import AuditDenied
from scheduler.api.auth import TokenCache
from scheduler.api.deps import MAX_BODY_BYTES, TOKEN_HELP, ApiSettings, Deps, Who, deps, drawn_view
from scheduler.api.errors import ApiError, first_error
from scheduler.api.limits import FollowerGate, RateLimiter
from scheduler.api.logs import EndWatcher
from scheduler.api.middleware import Authenticate, BodyLimit, error_response, store_unavailable
from scheduler.clock import Clock
from scheduler.model.job import JobState
from scheduler.store.batcher import SubmitBatcher
from scheduler.store.errors import Overloaded, unavailable
from scheduler.store.store import Store
from scheduler.store.token_store import TokenStore
from scheduler.view import ControllerHandle

__all__ = ["MAX_BODY_BYTES", "TOKEN_HELP", "ApiSettings", "create_app"]

log = logging.getLogger("corral.api")

HOLDING_STATES = frozenset({JobState.STARTING, JobState.RUNNING, JobState.PREEMPTING})


def create_app(
    store: Store,
    controller: ControllerHandle,
    tokens: TokenStore,
    log_dir: Path,
    clock: Clock,
    *,
    settings: ApiSettings | None = None,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> FastAPI:
    """The API over a store and the in-process controller. Build it once per process."""
    settings = settings or ApiSettings()
    batcher = SubmitBatcher(store)  # group commit: concurrent submissions share one transaction
    cache = TokenCache(tokens, ttl_s=settings.token_cache_s)

    def ended(job_ids: Collection[str]) -> list[str]:
        states = store.states(job_ids)
        return [j for j in job_ids if j not in states or states[j].terminal]

    shared = Deps(
        store=store,
        controller=controller,
        tokens=tokens,
        cache=cache,
        clock=clock,
        log_dir=log_dir,
        settings=settings,
        batcher=batcher,
        followers=FollowerGate(settings.max_followers),
        watcher=EndWatcher(ended, settings.log_poll_s),
    )

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
    app.state.deps = shared
    # Added innermost first: Authenticate runs before BodyLimit, so a wrong token is always 401.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        Authenticate,
        cache=cache,
        limiter=RateLimiter(settings.rate_per_s, settings.burst),
        token_help=TOKEN_HELP,
    )
    app.add_middleware(AuditDenied, store=store, clock=clock)  # outermost: sees every 401 and 403
    _install_error_handlers(app)

    # Prometheus scrapes without a token; the families are defined in scheduler/metrics.py.
    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["meta"], responses={503: {"description": "not ready: a check failed"}})
    def healthz() -> JSONResponse:
        """Readiness: the controller steps, the store answers a query and Ray its GCS, checked now.
        503 when any fails (a load balancer or Kubernetes then sends no traffic here)."""
        checks = dict(controller.health())
        ok = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ok else "degraded", "checks": checks, **controller.role()}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/whoami", response_model=s.WhoAmIOut, tags=["meta"])
    async def whoami(who: Who) -> s.WhoAmIOut:
        return s.whoami_out(who)

    jobs_routes.register(app)
    array_routes.register(app)

    @app.get("/v1/queues", response_model=list[s.QueueOut], tags=["cluster"])
    def queues(who: Who) -> list[s.QueueOut]:
        return [s.queue_out(q) for q in drawn_view(controller).queues]

    @app.get("/v1/nodes", response_model=list[s.NodeOut], tags=["cluster"])
    def nodes(request: Request, who: Who) -> list[s.NodeOut]:
        view = drawn_view(controller)
        mine: set[str] | None = None
        if not who.admin:  # a team sees every node, but only its own job ids on them
            mine = {r.id for r in deps(request).store.jobs(team=who.team, states=HOLDING_STATES)}
        return [s.node_out(n, [j for j in n.jobs if mine is None or j in mine]) for n in view.nodes]

    token_routes.register(app)
    node_routes.register(app)
    audit_routes.register(app)
    state_routes.register(app)

    @app.get("/livez", tags=["meta"])
    async def livez() -> dict[str, str]:
        """Liveness: the process serves requests (its readiness, with every check, is /healthz)."""
        return {"status": "ok"}

    return app


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return error_response(exc.status, exc.message, exc.field, **{**headers, **exc.headers})

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        field, message = first_error(exc.errors())
        return error_response(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such route {request.method} {request.url.path[:80]}: see /docs"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path[:80]}: see /docs"
        return error_response(exc.status_code, message, "body" if exc.status_code == 413 else None)

    @app.exception_handler(SQLAlchemyError)
    async def store_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        why = unavailable(exc)
        if why is None:
            return await internal(request, exc)
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path[:200], why)
        return store_unavailable(why)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return error_response(
            429,
            f"too many submissions are waiting for the store ({exc.pending}): retry in a second",
            None,
            **{"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path[:200])
        return error_response(500, "internal error: see the controller log")
