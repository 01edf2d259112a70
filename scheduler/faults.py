"""Fault injection for end-to-end and chaos tests: inert unless CORRAL_FAULTS is set.

Some failures of real parts cannot be produced on demand from outside (a Ray node whose raylet is
alive but never places a bundle). `CORRAL_FAULTS` names them, comma-separated, `name` or
`name=value`; the real code path then meets a real failure (a placement group that really never
becomes ready), so what is tested is the handling, not a stand-in:

    unplaceable_node=NODE   bundles for NODE ask for a node label no node has: starts there time
                            out in Ray, as on a node that cannot start anything

`corral serve` logs every active fault at start as a warning.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["KNOWN", "active", "parse"]

KNOWN = frozenset({"unplaceable_node"})


def parse(text: str) -> dict[str, str]:
    """`a=1,b` → {"a": "1", "b": ""}; ValueError naming an unknown fault."""
    faults: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in KNOWN:
            raise ValueError(f"CORRAL_FAULTS: unknown fault {name!r}: use one of {', '.join(sorted(KNOWN))}")
        faults[name] = value
    return faults


def active(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The faults this process injects (empty in normal operation)."""
    return parse(environ.get("CORRAL_FAULTS", ""))
