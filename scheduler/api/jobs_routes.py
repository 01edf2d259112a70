"""The job routes: submit, list, get, cancel, events, logs, history, audit (see app.py's docstring)."""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError

from scheduler.api import array_routes
from scheduler.api import schemas as s
from scheduler.api.auth import Principal, submission_denied
from scheduler.api.body import BodyError, parse_json, quote
from scheduler.api.deps import Deps, VisibleJob, Who, deps, not_found, team_filter
from scheduler.api.errors import ApiError, first_error
from scheduler.api.ids import MAX_INT64, After, canonical_id
from scheduler.api.logs import FollowResponse, log_path, read_log
from scheduler.model.job import TERMINAL_STATES, JobSpec, JobState
from scheduler.model.records import AuditRecord, EventRecord
from scheduler.policy.suggest import Suggestion
from scheduler.store.store import IdempotencyConflict, JobNotFound
from scheduler.view import NotReady, SpecError

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "NEXT_CURSOR", "register"]

log = logging.getLogger("corral.api")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NEXT_CURSOR = "X-Next-Cursor"
FOLLOW_RETRY_S = 5
ACTIVE_STATES = frozenset(JobState) - TERMINAL_STATES
DETAIL_EVENTS = 1000  # a job's describe shows this many events and audit entries; /events pages on

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"page size (≤ {MAX_LIMIT})")]
Seq = Annotated[int, Query(ge=0, le=MAX_INT64, description="cursor: the last seq seen")]

_JOBS = TypeAdapter(list[s.JobOut])
_HISTORY = TypeAdapter(list[s.HistoryEntryOut])
_EVENTS = TypeAdapter(list[s.EventOut])
_AUDIT = TypeAdapter(list[s.AuditOut])
_SPEC_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": JobSpec.model_json_schema()}},
    }
}
_CANCEL_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": s.CancelIn.model_json_schema()}},
    }
}

T = TypeVar("T")


def _json(value: Any, status: int = 200, adapter: TypeAdapter[Any] | None = None) -> Response:
    """Serialize straight to JSON: the models were built from trusted records, no re-validation."""
    body = value.model_dump_json() if adapter is None else adapter.dump_json(value).decode()
    return Response(content=body, status_code=status, media_type="application/json")


def _page(
    items: Sequence[T], limit: int, cursor: Callable[[T], int], out: list[Any], adapter: TypeAdapter[Any]
) -> Response:
    """A page of `out` (built from the first `limit` of `items`, which were fetched limit + 1), with
    X-Next-Cursor when there is more."""
    response = _json(out, adapter=adapter)
    if len(items) > limit:
        response.headers[NEXT_CURSOR] = str(cursor(items[limit - 1]))
    return response


def _parse_states(names: Sequence[str]) -> frozenset[JobState]:
    out: set[JobState] = set()
    for raw in names:
        for name in raw.split(","):
            try:
                out.add(JobState(name.strip().upper()))
            except ValueError:
                choices = ", ".join(st.value for st in JobState)
                raise ApiError(
                    422, f"query.state: unknown state {quote(name, 40)} — use one of {choices}", "state"
                ) from None
    return frozenset(out)


def _privacy(d: Deps, who: Principal, entries: Iterable[EventRecord | AuditRecord]) -> Callable[[str], bool]:
    """Whether the caller may read the private detail of an entry about `related_job`: an admin, or
    the team that owns that job (one query for all the entries)."""
    if who.admin:
        return lambda _: True
    related = {e.related_job for e in entries if e.related_job}
    teams = d.store.teams(related) if related else {}
    return lambda job_id: bool(job_id) and teams.get(job_id) == who.team


def _suggestions(d: Deps, who: Principal, job_id: str) -> list[Suggestion]:
    """The controller's counterfactual reasons for the job, as far as the caller's token allows."""
    return s.visible_suggestions(d.controller.suggestions(job_id), who)


def _spec(data: Any, header_key: str | None) -> JobSpec:
    """The user's spec with the submission rules; ApiError 422 naming the field."""
    if header_key is not None and isinstance(data, dict):
        in_body = data.get("idempotency_key")
        if in_body is not None and in_body != header_key:
            raise ApiError(
                422,
                f"spec.idempotency_key: the Idempotency-Key header ({quote(header_key, 40)}) differs from "
                f"the spec's ({quote(str(in_body), 40)}): send one key, or the same in both",
                "idempotency_key",
            )
        data = {**data, "idempotency_key": header_key}
    try:
        return JobSpec.submitted(data)
    except ValidationError as exc:
        field, message = first_error(exc.errors(include_url=False))
        raise ApiError(422, message, field) from None


def _body(raw: bytes, content_type: str | None, what: str) -> Any:
    try:
        return parse_json(raw, content_type, what)
    except BodyError as exc:
        raise ApiError(exc.status, exc.message, exc.field) from None


def register(app: FastAPI) -> None:
    @app.post(
        "/v1/jobs",
        status_code=201,
        tags=["jobs"],
        response_model=s.JobOut,
        openapi_extra=_SPEC_BODY,
        responses={
            200: {"model": s.JobOut | s.DryRunOut, "description": "existing job (same key) or dry run"},
            **{code: {"model": s.ErrorOut} for code in (400, 403, 409, 413, 415, 422, 429)},
        },
    )
    async def submit(
        request: Request,
        who: Who,
        dry_run: bool = False,
        team: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=128)] = None,
    ) -> Response:
        """Submit a job (or, with dry_run, say where it would go now without storing anything)."""
        d = deps(request)
        owner = team_filter(who, team) or who.team
        data = _body(await request.body(), request.headers.get("content-type"), "the spec")
        spec = _spec(data, idempotency_key)
        view = d.controller.view()
        priorities = {p.name: p.value for p in view.priority_classes}
        denied = submission_denied(who, spec, priorities, d.settings.default_min_runtime_s)
        if denied is not None:
            raise ApiError(403, denied[1], denied[0])
        try:
            spec = d.controller.check_spec(spec)  # the spec as accepted (default time limit filled in)
            if dry_run:  # runs decide(): CPU work, off the event loop
                result = await run_in_threadpool(d.controller.dry_run, spec, owner)
                return _json(s.dry_run_out(spec, result))
        except SpecError as exc:
            raise ApiError(400, f"spec.{exc.field}: {exc}", exc.field) from None
        except NotReady as exc:  # starting or taking over, or a dry run asked of a follower
            raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
        if spec.array is not None:  # a job array: all its tasks in one transaction
            return await array_routes.create(d, spec, owner)
        try:
            # async: the request waits for its group commit without holding a worker thread
            record, created = await asyncio.wrap_future(d.batcher.submit(spec, owner, d.clock.now()))
        except IdempotencyConflict:
            raise ApiError(
                409,
                f"spec.idempotency_key: {quote(spec.idempotency_key or '', 60)} was used for a different "
                "spec — use a new key for a new job",
                "idempotency_key",
            ) from None
        if created:
            d.controller.wake()
        return _json(s.job_out(record, d.clock.now(), {}), 201 if created else 200)

    @app.get(
        "/v1/jobs",
        response_model=list[s.JobOut],
        tags=["jobs"],
        responses={200: {"headers": {NEXT_CURSOR: {"description": "pass as `after` for the next page"}}}},
    )
    def list_jobs(
        request: Request,
        who: Who,
        state: Annotated[list[str] | None, Query(description="repeatable; case-insensitive")] = None,
        queue: Annotated[str | None, Query(max_length=64)] = None,
        all: bool = False,
        team: Annotated[str | None, Query(max_length=128)] = None,
        limit: Limit = DEFAULT_LIMIT,
        after: After = None,
        array: Annotated[str | None, Query(max_length=19, description="only tasks of this array")] = None,
    ) -> Response:
        """Jobs of the caller's team (an admin: every team's) by id: not finished ones unless all=true."""
        d = deps(request)
        states: Collection[JobState] | None = _parse_states(state) if state else None
        if states is None and not all:
            states = ACTIVE_STATES
        records = d.store.jobs(
            team=team_filter(who, team),
            queue=queue,
            states=states,
            limit=limit + 1,
            after=after,
            array_id=array,
        )
        now, view = d.clock.now(), d.controller.view()
        positions, estimates = view.queue_positions, view.estimated_starts
        out = [s.job_out(r, now, positions, estimates, _suggestions(d, who, r.id)) for r in records[:limit]]
        return _page(records, limit, lambda r: int(r.id), out, _JOBS)

    @app.get("/v1/jobs/{job_id}", response_model=s.JobDetailOut, tags=["jobs"])
    def get_job(request: Request, job: VisibleJob, who: Who) -> Response:
        """One job with its history (events) and audit records."""
        d = deps(request)
        events = d.store.events(job.id, limit=DETAIL_EVENTS)
        audit = d.store.audit(job.id, limit=DETAIL_EVENTS)
        private = _privacy(d, who, [*events, *audit])
        view = d.controller.view()
        out = s.JobDetailOut(
            **s.job_fields(
                job,
                d.clock.now(),
                view.queue_positions,
                view.estimated_starts,
                _suggestions(d, who, job.id),
            ),
            history=[s.event_out(e, private(e.related_job)) for e in events],
            audit=[s.audit_out(a, private(a.related_job)) for a in audit],
        )
        return _json(out)

    @app.post(
        "/v1/jobs/{job_id}/cancel",
        status_code=202,
        response_model=s.JobOut,
        tags=["jobs"],
        openapi_extra=_CANCEL_BODY,
        responses={code: {"model": s.ErrorOut} for code in (404, 409, 415, 422)},
    )
    async def cancel(request: Request, job: VisibleJob, who: Who) -> Response:
        """Ask the controller to stop the job (SIGTERM, the grace period, then SIGKILL)."""
        d = deps(request)
        raw = await request.body()
        grace_s: float | None = None
        if raw.strip():
            data = _body(raw, request.headers.get("content-type"), "the cancel request")
            try:
                grace_s = s.CancelIn.model_validate(data).grace_s
            except ValidationError as exc:
                field, message = first_error(exc.errors(include_url=False), "cancel", s.CancelIn.model_fields)
                raise ApiError(422, message, field) from None
        if job.state.terminal:
            raise ApiError(409, f"job {job.id} already finished ({job.state.value}): nothing to cancel")
        try:
            actor = f"{who.team} (token {who.token_id})"
            record = await run_in_threadpool(d.store.request_cancel, job.id, grace_s, d.clock.now(), actor)
        except JobNotFound:
            raise not_found(job.id) from None
        d.controller.wake()
        return _json(s.job_out(record, d.clock.now(), d.controller.view().queue_positions), 202)

    @app.get("/v1/jobs/{job_id}/events", response_model=list[s.EventOut], tags=["jobs"])
    def job_events(
        request: Request, job: VisibleJob, who: Who, after_seq: Seq = 0, limit: Limit = DEFAULT_LIMIT
    ) -> Response:
        """The job's history in order, a page at a time (X-Next-Cursor: the next after_seq)."""
        d = deps(request)
        events = d.store.events(job.id, after_seq=after_seq, limit=limit + 1)
        private = _privacy(d, who, events)
        out = [s.event_out(e, private(e.related_job)) for e in events[:limit]]
        return _page(events, limit, lambda e: e.seq, out, _EVENTS)

    @app.get(
        "/v1/jobs/{job_id}/logs",
        tags=["jobs"],
        response_class=StreamingResponse,  # for the docs; the route returns its FollowResponse
        responses={
            200: {"content": {"text/plain": {}}, "description": "the job's log bytes"},
            429: {"model": s.ErrorOut, "description": "too many followers for this token"},
        },
    )
    async def job_logs(
        request: Request,
        job: VisibleJob,
        who: Who,
        follow: bool = False,
        offset: Annotated[int, Query(ge=0, le=MAX_INT64)] = 0,
    ) -> FollowResponse:
        """The job's log from `offset`; with follow, streamed until the job ends."""
        d = deps(request)
        path = log_path(d.log_dir, job.id)
        if not follow or job.state.terminal:
            return FollowResponse(read_log(path, offset=offset), release=lambda: None)
        key = who.token_id
        if not d.followers.enter(key):
            raise ApiError(
                429,
                f"logs: this token already follows {d.followers.limit} logs at once: stop one "
                f"(Ctrl-C a `corral logs -f`) or retry in {FOLLOW_RETRY_S} s",
                "follow",
                headers={"Retry-After": str(FOLLOW_RETRY_S)},
            )
        ended = d.watcher.watch(job.id)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                d.followers.leave(key)
                d.watcher.unwatch(job.id)

        chunks = read_log(path, offset=offset, ended=ended, poll_s=d.settings.log_poll_s)
        return FollowResponse(chunks, release=release)

    @app.get("/v1/history", response_model=list[s.HistoryEntryOut], tags=["jobs"])
    def history(
        request: Request,
        who: Who,
        limit: Limit = DEFAULT_LIMIT,
        team: Annotated[str | None, Query(max_length=128)] = None,
        after: After = None,
    ) -> Response:
        """Finished jobs, newest first, each with its events: one query for the jobs, one for the events."""
        d = deps(request)
        records = d.store.jobs(
            team=team_filter(who, team),
            states=TERMINAL_STATES,
            limit=limit + 1,
            newest_first=True,
            after=after,
        )
        shown = records[:limit]
        events = d.store.events_of([r.id for r in shown])
        private = _privacy(d, who, [e for evs in events.values() for e in evs])
        now = d.clock.now()
        out = [
            s.HistoryEntryOut(
                **s.job_fields(r, now, {}),
                history=[s.event_out(e, private(e.related_job)) for e in events[r.id]],
            )
            for r in shown
        ]
        return _page(records, limit, lambda r: int(r.id), out, _HISTORY)

    @app.get("/v1/audit", response_model=list[s.AuditOut], tags=["audit"])
    def audit(
        request: Request,
        who: Who,
        job_id: Annotated[str | None, Query(description="only this job's entries")] = None,
        after_seq: Seq = 0,
        limit: Limit = DEFAULT_LIMIT,
        team: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response:
        """Placement decisions with their residency checks (a team: of its own jobs only)."""
        d = deps(request)
        only: str | None = None
        if job_id is not None:
            only = canonical_id(job_id)
            record = d.store.get(only) if only is not None else None
            if only is None or record is None or not who.may_see(record.team):
                raise not_found(job_id)
        records: list[AuditRecord] = d.store.audit(
            only, after_seq=after_seq, limit=limit + 1, team=team_filter(who, team)
        )
        private = _privacy(d, who, records)
        out = [s.audit_out(a, private(a.related_job)) for a in records[:limit]]
        return _page(records, limit, lambda a: a.seq, out, _AUDIT)
