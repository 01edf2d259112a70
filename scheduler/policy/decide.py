"""The one entry point: decide(snapshot, config, now) -> Plan, for every policy by name."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.model.plan import Plan
from scheduler.model.snapshot import ClusterSnapshot
from scheduler.policy.baselines import decide_fifo, decide_las, decide_sjf
from scheduler.policy.config import PolicyConfig
from scheduler.policy.cycle import decide_corral

DecideFn = Callable[[ClusterSnapshot, PolicyConfig, float], Plan]

POLICIES: dict[str, DecideFn] = {
    "corral": decide_corral,
    "fifo": decide_fifo,
    "sjf": decide_sjf,
    "las": decide_las,
}


def decide(snapshot: ClusterSnapshot, config: PolicyConfig, now: float) -> Plan:
    """Run one cycle of the policy that `config.name` selects. Pure: reads only its arguments."""
    return POLICIES[config.name](snapshot, config, now)
