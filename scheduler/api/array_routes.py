"""Job arrays: creating one (from POST /v1/jobs with `array`), reading it, cancelling all its tasks.

An array is its tasks: one job per index, each scheduled, preempted and accounted as its own job. Its
id is its first task's id (as Slurm's SLURM_ARRAY_JOB_ID), so the routes find it through that job,
with the same visibility: another team's array is a 404 like a missing one.
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from scheduler.api import schemas as s
from scheduler.api.body import BodyError, parse_json, quote
from scheduler.api.deps import Deps, JobId, Who, deps
from scheduler.api.errors import ApiError, first_error
from scheduler.model.array import parse_array
from scheduler.model.job import JobSpec
from scheduler.model.records import JobRecord
from scheduler.store.store import IdempotencyConflict, JobNotFound

__all__ = ["create", "register"]


async def create(d: Deps, spec: JobSpec, owner: str) -> Response:
    """Store one PENDING task per index of `spec.array` in one transaction: 201 with the array, or
    200 with the array already stored under the same Idempotency-Key."""
    assert spec.array is not None
    indices = parse_array(spec.array).indices  # checked by JobSpec.submitted: cannot fail here
    try:
        tasks, created = await run_in_threadpool(d.store.submit_array, spec, indices, owner, d.clock.now())
    except IdempotencyConflict:
        raise ApiError(
            409,
            f"spec.idempotency_key: {quote(spec.idempotency_key or '', 60)} was used for a different "
            "spec — use a new key for a new array",
            "idempotency_key",
        ) from None
    if created:
        d.controller.wake()
    body = s.array_out(tasks, d.clock.now(), {})
    return Response(body.model_dump_json(), 201 if created else 200, media_type="application/json")


def _not_found(array_id: str) -> ApiError:
    return ApiError(404, f"array {array_id} not found: check the id with `corral jobs --all`", "id")


def _tasks(d: Deps, array_id: str, who: Who) -> list[JobRecord]:
    tasks = d.store.array_tasks(array_id)
    if not tasks or not who.may_see(tasks[0].team):
        raise _not_found(array_id)
    return tasks


def register(app: FastAPI) -> None:
    @app.get("/v1/arrays/{job_id}", response_model=s.ArrayOut, tags=["jobs"])
    def get_array(request: Request, job_id: JobId, who: Who) -> Response:
        """The array whose first task is this job, with every task."""
        d = deps(request)
        tasks = _tasks(d, job_id, who)
        body = s.array_out(tasks, d.clock.now(), d.controller.view().queue_positions)
        return Response(body.model_dump_json(), media_type="application/json")

    @app.post(
        "/v1/arrays/{job_id}/cancel",
        status_code=202,
        response_model=s.ArrayOut,
        tags=["jobs"],
        responses={code: {"model": s.ErrorOut} for code in (404, 409, 415, 422)},
    )
    async def cancel_array(request: Request, job_id: JobId, who: Who) -> Response:
        """Cancel every unfinished task of the array (one transaction; each its grace, then SIGKILL)."""
        d = deps(request)
        raw = await request.body()
        grace_s: float | None = None
        if raw.strip():
            try:
                data = parse_json(raw, request.headers.get("content-type"), "the cancel request")
            except BodyError as exc:
                raise ApiError(exc.status, exc.message, exc.field) from None
            try:
                grace_s = s.CancelIn.model_validate(data).grace_s
            except ValidationError as exc:
                field, message = first_error(exc.errors(include_url=False), "cancel", s.CancelIn.model_fields)
                raise ApiError(422, message, field) from None
        tasks = await run_in_threadpool(_tasks, d, job_id, who)
        if all(t.state.terminal for t in tasks):
            raise ApiError(409, f"array {job_id}: every task already finished — nothing to cancel")
        actor = f"{who.team} (token {who.token_id})"
        try:
            tasks = await run_in_threadpool(
                d.store.request_cancel_array, job_id, grace_s, d.clock.now(), actor
            )
        except JobNotFound:
            raise _not_found(job_id) from None
        d.controller.wake()
        body = s.array_out(tasks, d.clock.now(), d.controller.view().queue_positions)
        return Response(body.model_dump_json(), 202, media_type="application/json")
