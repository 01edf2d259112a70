"""Node routes for admins: cordon (take no new jobs; running ones stay) and uncordon.

The controller cordons a node by itself after 3 failed starts in a row there; an admin uncordons it
once it is repaired, or cordons one before maintenance (as `kubectl cordon`). The controller reads
cordons from the store on each full cycle (every few seconds) and is woken at once.
"""

# No `from __future__ import annotations`: FastAPI must see the route annotations as objects.

import asyncio
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from scheduler.api import schemas as s
from scheduler.api.auth import Principal
from scheduler.api.body import quote
from scheduler.api.deps import Who, deps, drawn_view
from scheduler.api.errors import ApiError
from scheduler.model.records import Cordon
from scheduler.store import controller_state

__all__ = ["register"]


class CordonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="cordoned by an admin", min_length=1, max_length=500)


def _admin_only(who: Principal) -> None:
    if not who.admin:
        raise ApiError(403, f"nodes: only an admin may cordon or uncordon nodes (team {quote(who.team, 40)})")


def register(app: FastAPI) -> None:
    def known(request: Request, node: str) -> s.NodeOut:
        view = drawn_view(deps(request).controller)
        for status in view.nodes:
            if status.node.id == node:
                return s.node_out(status, list(status.jobs))
        if not view.nodes:  # a controller that just started or took over has not seen them yet
            raise ApiError(
                503,
                "the controller has not seen the cluster's nodes yet; retry",
                headers={"Retry-After": "1"},
            )
        raise ApiError(404, f"node {quote(node, 80)} not found: see `corral nodes`", "node")

    @app.post("/v1/nodes/{node}/cordon", response_model=s.NodeOut, tags=["cluster"])
    async def cordon(
        request: Request,
        who: Who,
        node: str = PathParam(max_length=256),
        body: CordonIn | None = None,
    ) -> s.NodeOut:
        """Take the node out of scheduling: its jobs keep running, no new job is placed there."""
        _admin_only(who)
        before = known(request, node)
        d = deps(request)
        why = (body or CordonIn()).reason
        record = Cordon(node, " ".join(why.split()), d.clock.now(), by=who.team)
        actor = f"{who.team} (token {who.token_id})"
        await run_in_threadpool(controller_state.cordon, d.store, record, actor)
        d.controller.cordons_changed()
        written = before.model_copy(update={"state": "draining", "cordon_reason": record.reason})
        return await _settled(request, written, known)

    @app.post("/v1/nodes/{node}/uncordon", response_model=s.NodeOut, tags=["cluster"])
    async def uncordon(request: Request, who: Who, node: str = PathParam(max_length=256)) -> s.NodeOut:
        """Let the node take new jobs again (after a repair)."""
        _admin_only(who)
        before = known(request, node)
        d = deps(request)
        by = f"{who.team} (token {who.token_id})"
        if not await run_in_threadpool(controller_state.uncordon, d.store, node, d.clock.now(), by):
            raise ApiError(409, f"node {quote(node, 80)} is not cordoned: nothing to do", "node")
        d.controller.cordons_changed()
        written = before.model_copy(update={"state": "ready", "cordon_reason": ""})
        return await _settled(request, written, known)


async def _settled(
    request: Request, written: s.NodeOut, known: Callable[[Request, str], s.NodeOut]
) -> s.NodeOut:
    """The node once the controller's view shows the change (its next cycle, within moments), or as
    it is after a short wait (a down node stays down). Never an error: the store has taken the
    change, and a client that retried a 503 here would be told 409 about its own request. A view
    that lost its nodes meanwhile (a restart, a takeover) answers with what was written."""
    latest = written
    for attempt in range(41):
        if attempt:
            await asyncio.sleep(0.05)
        try:
            latest = known(request, written.id)
        except ApiError as unseen:
            if unseen.status != 503:
                raise
            continue
        if latest.state == written.state:
            break
    return latest
