"""What `corral check` reads: the store in one snapshot, then Ray.

The store is read in ONE read-only transaction (SQLite: a deferred transaction is one WAL snapshot;
PostgreSQL: REPEATABLE READ), so the jobs, the allocations table and the persisted usage are all of
the same commit. Ray is read after the store: what Ray shows that the store did not yet commit is a
placement in flight, which the second reading (scheduler/check/run.py) sorts out.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from scheduler.backends.ray_attempt import ACTOR_NAME, PG_NAME
from scheduler.backends.ray_nodes import node_from_ray
from scheduler.check.invariants import RayActor, RayGroup, RayState, StoreState
from scheduler.model.job import TERMINAL_STATES
from scheduler.model.queue import Queue
from scheduler.store import codec
from scheduler.store.schema import allocations, events, jobs, queue_usage, queues
from scheduler.store.store import Store

_TERMINAL = [s.value for s in TERMINAL_STATES]
_CHUNK = 500
_GCS_TIMEOUT_S = 5.0
_MAX_LISTED = 100  # ids of one kind of missing job read at most


@contextmanager
def snapshot(store: Store) -> Iterator[Connection]:
    """A read-only transaction that sees one committed state of the whole store."""
    with store.engine.connect() as connection:
        if store.dialect == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            if store.dialect == "postgresql":
                connection.execute(sa.text("SET TRANSACTION READ ONLY"))
            yield connection


def read_store(store: Store, acknowledged: Sequence[str] = ()) -> StoreState:
    with snapshot(store) as connection:
        active = connection.execute(
            sa.select(jobs).where(jobs.c.state.not_in(_TERMINAL)).order_by(jobs.c.id)
        ).mappings()
        records = [codec.job_record(row) for row in active]
        rows = {
            (node, gpu): (str(job_id), attempt)
            for node, gpu, job_id, attempt in connection.execute(
                sa.select(allocations.c.node, allocations.c.gpu, allocations.c.job_id, allocations.c.attempt)
            )
        }
        usage = {q: int(g) for q, g in connection.execute(sa.select(queue_usage.c.queue, queue_usage.c.gpus))}
        queue_list = [
            Queue.model_validate(spec)
            for (spec,) in connection.execute(sa.select(queues.c.spec).order_by(queues.c.position))
        ]
        present = _present(connection, acknowledged)
        without_row = _submitted_without_row(connection)
        gaps = _id_gaps(connection) if store.dialect == "sqlite" else []
    return StoreState(
        jobs=records,
        allocation_rows=rows,
        usage=usage,
        queues=queue_list,
        acknowledged=tuple(acknowledged),
        present=present,
        submitted_without_row=without_row,
        id_gaps=gaps,
    )


def _present(connection: Connection, acknowledged: Sequence[str]) -> frozenset[str]:
    keys = {pk: job_id for job_id in acknowledged if (pk := codec.job_pk(job_id)) is not None}
    found: set[str] = set()
    pks = sorted(keys)
    for start in range(0, len(pks), _CHUNK):
        chunk = pks[start : start + _CHUNK]
        for (pk,) in connection.execute(sa.select(jobs.c.id).where(jobs.c.id.in_(chunk))):
            found.add(keys[pk])
    return frozenset(found)


def _submitted_without_row(connection: Connection) -> list[str]:
    """Job ids with a SUBMITTED event (written in the submission's own transaction) and no job row."""
    has_row = sa.exists().where(sa.cast(jobs.c.id, sa.String) == events.c.job_id)
    query = (
        sa.select(events.c.job_id).where(events.c.kind == "SUBMITTED", ~has_row).distinct().limit(_MAX_LISTED)
    )
    return sorted((str(job_id) for (job_id,) in connection.execute(query)), key=lambda j: (len(j), j))


def _id_gaps(connection: Connection) -> list[tuple[int, int]]:
    """SQLite only: ids missing in 1..high-water mark. AUTOINCREMENT never reuses an id and its
    counter rolls back with a failed submission, so every id up to it was acknowledged once; a
    hole is a job row that disappeared. (PostgreSQL's sequence skips values on rollback: no rule.)"""
    high = connection.execute(sa.text("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'")).scalar()
    if not high:
        return []
    count = connection.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()
    if count >= high:
        return []
    gaps: list[tuple[int, int]] = []
    starts = connection.execute(
        sa.text(
            "SELECT 1 AS s FROM (SELECT 1) WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE id = 1) "
            "UNION SELECT j.id + 1 FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM jobs k WHERE k.id = j.id + 1) "
            "AND j.id < :high ORDER BY s LIMIT :n"
        ),
        {"high": high, "n": _MAX_LISTED},
    ).scalars()
    for start in starts:
        end = connection.execute(sa.select(sa.func.min(jobs.c.id)).where(jobs.c.id > start)).scalar()
        gaps.append((int(start), int(end) - 1 if end is not None else int(high)))
    return gaps


# --- Ray ---------------------------------------------------------------------------------------------


def read_ray() -> RayState:
    """Ray's view, through this process's Ray connection (ray.init in Corral's namespace)."""
    import ray

    from scheduler.backends.ray_state import free_gpus

    nodes = {}
    totals: dict[str, float] = {}
    ray_to_corral: dict[str, str] = {}
    for info in ray.nodes():  # type: ignore[no-untyped-call]
        node = node_from_ray(info)
        if node is not None:
            nodes[node.id] = node
            totals[node.id] = float(info.get("Resources", {}).get("GPU", 0.0))
            ray_to_corral[str(info["NodeID"])] = node.id
    free = free_gpus(ray_to_corral, _GCS_TIMEOUT_S)
    used = {n: max(0.0, totals[n] - free.get(n, 0.0)) for n in nodes}
    table = ray.util.placement_group_table().values()
    groups = [g for info in table if (g := _group(info, ray_to_corral))]
    grouped: dict[str, float] = {}
    for info in table:  # anyone's groups, Corral's or not
        if info.get("state") != "REMOVED":
            for placed, gpus in _bundles(info, ray_to_corral):
                if placed is not None:
                    grouped[placed] = grouped.get(placed, 0.0) + gpus
    actors = []
    for name in ray.util.list_named_actors(all_namespaces=False):
        if m := ACTOR_NAME.match(name):
            actors.append(RayActor(name, m["job"], int(m["attempt"]), int(m["rank"])))
    return RayState(nodes=nodes, used_gpus=used, groups=groups, actors=actors, grouped_gpus=grouped)


def _group(info: dict[str, Any], ray_to_corral: dict[str, str]) -> RayGroup | None:
    state = str(info.get("state") or "")
    m = PG_NAME.match(str(info.get("name") or ""))
    if m is None or state == "REMOVED":
        return None
    return RayGroup(str(info["name"]), m["job"], int(m["attempt"]), state, _bundles(info, ray_to_corral))


def _bundles(info: dict[str, Any], ray_to_corral: dict[str, str]) -> tuple[tuple[str | None, float], ...]:
    """(Corral node id, or None while not placed; GPUs) per bundle of a placement group."""
    where = info.get("bundles_to_node_id") or {}
    bundles = []
    for index, resources in sorted((info.get("bundles") or {}).items()):
        ray_node = where.get(index)
        node = ray_to_corral.get(str(ray_node), str(ray_node)) if ray_node else None
        bundles.append((node, float(resources.get("GPU", 0.0))))
    return tuple(bundles)
