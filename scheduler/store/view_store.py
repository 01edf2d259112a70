"""The leader's ClusterView in the store, so that followers answer `queues`, `nodes` and queue
positions with what the leader saw (at most a second or so old) instead of nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.engine import Connection

from scheduler.store import engine as engines
from scheduler.store.schema import controller_view
from scheduler.store.store import Store
from scheduler.view import ClusterView

__all__ = ["PublishedView", "publish_view", "read_view"]

NAME = "controller"
_ADAPTER = TypeAdapter(ClusterView)
_PAIR_KEYED = ("jobs_by_state", "pending_by_reason")  # (a, b) keys: JSON keeps them as [a, b, n]


@dataclass(frozen=True, slots=True)
class PublishedView:
    view: ClusterView
    epoch: int  # the leader's lease epoch when it wrote it
    at: float  # when it wrote it (the leader's clock)


def encode(view: ClusterView) -> str:
    data: dict[str, Any] = _ADAPTER.dump_python(view, mode="json", exclude=set(_PAIR_KEYED))
    for name in _PAIR_KEYED:
        data[name] = [[a, b, n] for (a, b), n in getattr(view, name).items()]
    return json.dumps(data, separators=(",", ":"))


def decode(body: str) -> ClusterView:
    data = json.loads(body)
    for name in _PAIR_KEYED:
        data[name] = {(a, b): n for a, b, n in data.get(name, [])}
    view = _ADAPTER.validate_python(data)
    # Sequence fields come back as lists: tuples, as the controller builds them (and comparable).
    return replace(
        view,
        nodes=tuple(view.nodes),
        queues=tuple(view.queues),
        priority_classes=tuple(view.priority_classes),
    )


def publish_view(
    store: Store, view: ClusterView, epoch: int, fence: Callable[[Connection], None] | None = None
) -> None:
    """Write the leader's view (fenced like its other writes: a deposed leader's view is refused)."""
    row = {"name": NAME, "epoch": epoch, "at": view.time, "body": encode(view)}
    with engines.write(store.engine) as connection:
        if fence is not None:
            fence(connection)
        updated = connection.execute(
            sa.update(controller_view).where(controller_view.c.name == NAME).values(**row)
        ).rowcount
        if not updated:
            connection.execute(sa.insert(controller_view).values(**row))


def read_view(store: Store) -> PublishedView | None:
    with engines.read(store.engine) as connection:
        row = (
            connection.execute(sa.select(controller_view).where(controller_view.c.name == NAME))
            .mappings()
            .first()
        )
    if row is None:
        return None
    return PublishedView(decode(row["body"]), row["epoch"], row["at"])
