"""Domain model: pydantic types shared by the policy, the simulator and the controller."""

from scheduler.model.cluster import ANY, Node, NodeState, PoolKey
from scheduler.model.job import Job, JobSpec, JobState, PendingCode, PendingReason, check_transition
from scheduler.model.plan import Allocation, NodeAllocation, Place, Plan, Preempt, Reject, Reserve
from scheduler.model.queue import ClusterConfig, PriorityClass, Queue

__all__ = [
    "ANY",
    "Allocation",
    "ClusterConfig",
    "Job",
    "JobSpec",
    "JobState",
    "Node",
    "NodeAllocation",
    "NodeState",
    "PendingCode",
    "PendingReason",
    "Place",
    "Plan",
    "PoolKey",
    "Preempt",
    "PriorityClass",
    "Queue",
    "Reject",
    "Reserve",
    "check_transition",
]
