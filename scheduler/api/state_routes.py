"""`GET /v1/state` (admins): the controller's last scheduling state, for `corral whatif`.

Read-only: it returns the immutable state the controller's last cycle decided over (nodes, pending
and running jobs, fair-share usage), the configuration it ran under, the runtimes of recently
finished jobs and the jobs submitted in the last `recent_s` seconds. The what-if replays run in the
CLI's own process, so a 10,000-job replay costs the controller and the API nothing but this one
serialisation, and nothing the replay does can reach the live cluster. Admins only: the state holds
every team's jobs (their specs, commands included).
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

import json
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from scheduler.api.body import quote
from scheduler.api.deps import Who, deps
from scheduler.api.errors import ApiError
from scheduler.model.job import JobState
from scheduler.model.snapshot import RunningJob
from scheduler.view import NotReady, ReplayInputs, finished_runtime

__all__ = ["STATE_FORMAT", "register"]

STATE_FORMAT = 1
_FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.TIMEOUT)
MAX_RECENT = 100_000
MAX_FINISHED = 2000


def _running(r: RunningJob) -> dict[str, Any]:
    return {
        "job": r.job.model_dump(mode="json"),
        "allocation": r.allocation.model_dump(mode="json"),
        "started_at": r.started_at,
    }


def encode(inputs: ReplayInputs, finished: list[Any], recent: list[Any]) -> dict[str, Any]:
    state = inputs.state
    return {
        "format": STATE_FORMAT,
        "time": state.time,
        "cluster": inputs.cluster.model_dump(mode="json"),
        "policy": inputs.policy.model_dump(mode="json"),
        "nodes": [n.model_dump(mode="json") for n in state.nodes],
        "pending": [j.model_dump(mode="json") for j in state.pending],
        "running": [_running(r) for r in state.running],
        "usage": dict(state.usage),
        "finished": finished,
        "recent": recent,
    }


def register(app: FastAPI) -> None:
    @app.get("/v1/state", tags=["cluster"])
    def state(
        request: Request,
        who: Who,
        recent_s: Annotated[float, Query(ge=0, le=30 * 86400)] = 86400.0,
    ) -> Response:
        """The last cycle's scheduling state and configuration (admins; read-only), for what-if."""
        if not who.admin:
            raise ApiError(
                403, f"state: only an admin may read every team's jobs (team {quote(who.team, 40)})"
            )
        d = deps(request)
        try:
            inputs = d.controller.replay_inputs()
        except NotReady as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "1"}) from None
        finished = d.store.jobs(states=_FINISHED, limit=MAX_FINISHED, newest_first=True)
        runtimes = []
        for rec in reversed(finished):
            ran = finished_runtime(rec.job)
            if ran is not None:
                runtimes.append([rec.job.spec.queue, ran])
        recent = _recent(d.store, inputs.state.time - recent_s)
        body = json.dumps(encode(inputs, runtimes, recent), separators=(",", ":"))
        return Response(body, media_type="application/json")


def _recent(store: Any, since: float, page: int = 1000) -> list[Any]:
    """The jobs submitted since `since` (ids grow with submission time), oldest first."""
    out: list[Any] = []
    after: int | None = None
    while len(out) < MAX_RECENT:
        records = store.jobs(limit=page, newest_first=True, after=after)
        for rec in records:
            if rec.job.submitted_at < since:
                out.reverse()
                return out
            out.append(rec.job.model_dump(mode="json"))
        if len(records) < page:
            break
        after = int(records[-1].id)
    out.reverse()
    return out
