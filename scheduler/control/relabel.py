"""Data residency under change: a node whose region is not what the controller last saw.

A node's region can change while jobs run there (its Ray node re-registered with another
`corral.dev/region` label, a cluster file that disagrees with what Ray reports after a restart).
The node is then treated as a new node: it is scheduled under its new region from this step on,
and every job holding GPUs there whose data region it no longer matches is stopped at once (no
grace: the job's data must not stay outside its region) and requeued with restart_count + 1, as
after a node failure (not the job's failure). Jobs without a data region, or whose region the node
still matches, keep running. Each stop has an event and an audit entry naming the node and its old
and new region.

The GPUs of a job being stopped stay held until the backend says it stopped, so nothing else is
placed on them meanwhile (the snapshot shows the job as leaving, as a preempted one).

Pure: `region_change` decides from the old and new nodes and the records; `stop_outside_region`
turns one decision into record changes, history and effects. The controller commits them in the
step's transaction before the stop is carried out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from scheduler.control.transitions import Step, Stop, holds_gpus
from scheduler.model.cluster import ANY, Node
from scheduler.model.records import AuditRecord, JobRecord, StopReason

UNKNOWN_REGION = "?"  # the old region of a node this controller had not seen before


@dataclass(frozen=True, slots=True)
class RegionStop:
    """Stop `job_id`: its node `node` is now in `new_region`, outside the job's `data_region`."""

    job_id: str
    node: str
    old_region: str
    new_region: str
    data_region: str


@dataclass(frozen=True, slots=True)
class RegionChange:
    moved: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # node → (old, new) region
    stops: tuple[RegionStop, ...] = ()


def region_change(
    old: Mapping[str, Node], new: Mapping[str, Node], records: Iterable[JobRecord]
) -> RegionChange:
    """Which nodes changed region since `old`, and which jobs must stop for it.

    Looked at: the nodes of `new` whose region differs from `old`, and those not in `old` at all (seen
    for the first time: after a controller restart the region a job was placed under is not known,
    only the job's data region is). A job holding GPUs on one of them, with a data region that node
    does not match, is to be stopped — unless it is already stopping for this reason.
    """
    moved = {
        node_id: (old[node_id].region, node.region)
        for node_id, node in new.items()
        if node_id in old and old[node_id].region != node.region
    }
    look = moved.keys() | (new.keys() - old.keys())
    if not look:
        return RegionChange()
    stops: list[RegionStop] = []
    for rec in records:
        want = rec.job.spec.data_region
        if want == ANY or not holds_gpus(rec) or rec.stop_reason is StopReason.REGION_CHANGE:
            continue
        assert rec.allocation is not None
        for node_id in rec.allocation.node_ids:
            if node_id in look and new[node_id].region != want:
                before = moved[node_id][0] if node_id in moved else UNKNOWN_REGION
                stops.append(RegionStop(rec.id, node_id, before, new[node_id].region, want))
                break
    return RegionChange(moved, tuple(stops))


def stop_outside_region(rec: JobRecord, stop: RegionStop, now: float, step: Step) -> None:
    """Stop the job at once and requeue it when it has stopped (transitions.end_of_attempt). A stop
    already under way for another reason (preemption, cancel, time limit) keeps its reason, so the
    job ends as it would have, but loses its grace period."""
    moved = f"node {stop.node} is now in region {stop.new_region} (was {stop.old_region})"
    why = f"{moved}, outside the job's data region {stop.data_region}"
    if rec.stop_reason is None:
        step.put(replace(rec, stop_reason=StopReason.REGION_CHANGE, stop_requested_at=now, updated_at=now))
        outcome = "stopped at once, then requeued"
    else:
        outcome = f"its stop under way ({rec.stop_reason.value}) ends now, without grace"
    step.note(rec, "REGION_CHANGED", now, f"{why}: {outcome}", node=stop.node)
    step.effects.append(Stop(rec.job, 0.0))
    step.audit.append(
        AuditRecord(
            now,
            rec.id,
            "region_change",
            rec.job.restart_count,
            nodes=(stop.node,),
            node_regions=(stop.new_region,),
            data_region=stop.data_region,
            residency_ok=False,
            detail=f"{moved}; {outcome}",
        )
    )
