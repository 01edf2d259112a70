"""Which decision modules run compiled: the opt-in mypyc build (CORRAL_COMPILE=1, see setup.py).

The list is read by setup.py without importing the package, so this module imports only the
standard library. The modules are the pure decision code (the cycle, quotas, preemption,
placement, ordering, the capacity index), the simulator's event loop and its running jobs by
pool; the pydantic models stay interpreted.
"""

from __future__ import annotations

import importlib
import importlib.machinery

COMPILED_MODULES: tuple[str, ...] = (
    "scheduler.model.capacity",
    "scheduler.model.pending_shapes",
    "scheduler.model.running_pools",
    "scheduler.model.snapshot",
    "scheduler.policy.backfill",
    "scheduler.policy.baselines",
    "scheduler.policy.cycle",
    "scheduler.policy.decide",
    "scheduler.policy.explain",
    "scheduler.policy.group_walk",
    "scheduler.policy.order",
    "scheduler.policy.place",
    "scheduler.policy.pool_memo",
    "scheduler.policy.preempt",
    "scheduler.policy.quota",
    "scheduler.policy.suggest",
    "scheduler.policy.usage",
    "scheduler.policy.words",
    "scheduler.sim.runner",
)


def compiled_modules() -> list[str]:
    """The listed modules that were loaded from a compiled extension rather than from source."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [
        name for name in COMPILED_MODULES if (importlib.import_module(name).__file__ or "").endswith(suffixes)
    ]


def build_name() -> str:
    """How this install runs its decision code, in a word or two (shown by `corral version`)."""
    done = compiled_modules()
    if not done:
        return "interpreted"
    if len(done) == len(COMPILED_MODULES):
        return "compiled with mypyc"
    return f"partly compiled ({len(done)} of {len(COMPILED_MODULES)} modules)"
