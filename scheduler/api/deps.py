"""What the routes share: the process' parts (`Deps`, on app.state), the caller, and the job a path
names — one path-parameter type for every job route, so `007`, `7` and `abc` mean the same thing
everywhere."""

# No `from __future__ import annotations`: FastAPI must see the dependency annotations as objects.

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler.api.auth import Principal, TokenCache
from scheduler.api.errors import ApiError
from scheduler.api.ids import canonical_id
from scheduler.api.limits import DEFAULT_BURST, DEFAULT_FOLLOWERS, DEFAULT_RATE, FollowerGate
from scheduler.api.logs import POLL_S, EndWatcher
from scheduler.clock import Clock
from scheduler.model.records import JobRecord
from scheduler.policy.config import PolicyConfig
from scheduler.store.batcher import SubmitBatcher
from scheduler.store.store import Store
from scheduler.store.token_store import TokenStore
from scheduler.view import ClusterView, ControllerHandle

__all__ = ["ApiSettings", "Deps", "JobId", "VisibleJob", "Who", "deps", "not_found", "team_filter"]

_PLAIN = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
MAX_BODY_BYTES = 64 * 1024
TOKEN_HELP = (
    "invalid, revoked or missing token: set CORRAL_TOKEN to a token from your admin "
    "(`corral token create`), or use the context.yaml that `corral up` wrote"
)


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The API's limits (flags of `corral serve`)."""

    max_body_bytes: int = MAX_BODY_BYTES
    rate_per_s: float = DEFAULT_RATE  # per token; admin tokens are exempt
    burst: int = DEFAULT_BURST
    max_followers: int = DEFAULT_FOLLOWERS  # concurrent `logs -f` per token
    token_cache_s: float = 5.0  # how stale another replica's view of a revoke may be
    default_min_runtime_s: float = PolicyConfig().default_min_runtime_s  # longer = "protection"
    log_poll_s: float = POLL_S


@dataclass(slots=True)
class Deps:
    store: Store
    controller: ControllerHandle
    tokens: TokenStore
    cache: TokenCache
    clock: Clock
    log_dir: Path
    settings: ApiSettings
    batcher: SubmitBatcher
    followers: FollowerGate
    watcher: EndWatcher


def deps(request: Request) -> Deps:
    found: Deps = request.app.state.deps
    return found


def drawn_view(controller: ControllerHandle) -> ClusterView:
    """The controller's view of the cluster, or 503 with Retry-After while no cycle has drawn it (a
    controller that just started or took over): empty lists would say there are no queues or nodes."""
    view = controller.view()
    if not view.drawn:
        raise ApiError(
            503,
            "the controller has not drawn the cluster yet (it is starting or taking over); retry",
            headers={"Retry-After": "1"},
        )
    return view


# For the OpenAPI document (and /docs' "Authorize" button); the Authenticate middleware checks it.
_bearer = HTTPBearer(auto_error=False, description="A Corral token (`corral token create`, context.yaml)")


def _principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    who = getattr(request.state, "principal", None)
    if not isinstance(who, Principal):  # never: the middleware guards every /v1 route
        raise ApiError(401, TOKEN_HELP, headers={"WWW-Authenticate": "Bearer"})
    return who


Who = Annotated[Principal, Depends(_principal)]


def _shown(raw: str) -> str:
    """An id as it may be echoed: plain ids as they are, anything else quoted and cut short."""
    if _PLAIN.match(raw):
        return raw
    text = repr(raw)
    return text if len(text) <= 40 else text[:36] + "...'"


def not_found(raw: str) -> ApiError:
    return ApiError(404, f"job {_shown(raw)} not found: check the id with `corral jobs --all`", "id")


def _job_id(
    job_id: Annotated[str, PathParam(description="decimal job id (leading zeros allowed)")],
) -> str:
    canonical = canonical_id(job_id)
    if canonical is None:
        raise not_found(job_id)
    return canonical


JobId = Annotated[str, Depends(_job_id)]
"""The job id of the path, canonical ('7' for '007'); 404 for anything that cannot be a job id."""


def _visible_job(request: Request, job_id: JobId, who: Who) -> JobRecord:
    record = deps(request).store.get(job_id)
    if record is None or not who.may_see(record.team):  # another team's job: the same 404
        raise not_found(job_id)
    return record


VisibleJob = Annotated[JobRecord, Depends(_visible_job)]
"""The job of the path if the caller may see it; 404 otherwise (never 403: ids reveal nothing)."""


def team_filter(who: Principal, team: str | None) -> str | None:
    """The team a read is limited to: the caller's own, or for an admin the one asked (None: all)."""
    if who.admin:
        return team
    if team is not None and team != who.team:
        raise ApiError(403, f"team {_shown(team)}: only an admin may act for another team", "team")
    return who.team
