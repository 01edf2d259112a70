"""Nodes and their topology (region → zone → rack → NVLink domain)."""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field

ANY = "any"
"""Wildcard for a job's gpu_type or data_region: no constraint."""


class NodeState(str, Enum):
    READY = "ready"
    DRAINING = "draining"  # runs what it has, takes nothing new
    DOWN = "down"


class PoolKey(NamedTuple):
    """Nodes that are interchangeable for placement: same region and GPU type."""

    region: str
    gpu_type: str


class Node(BaseModel):
    """One machine with GPUs. Immutable: a change of state is a new Node."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    region: str = Field(min_length=1)
    zone: str = ""
    rack: str = Field(min_length=1)
    nvlink_domain: str = ""
    gpu_type: str = Field(min_length=1)
    gpus: int = Field(default=8, ge=1, le=64)
    cpus: int = Field(default=96, ge=1)
    memory_gb: int = Field(default=1024, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)
    state: NodeState = NodeState.READY

    @property
    def pool(self) -> PoolKey:
        return PoolKey(self.region, self.gpu_type)

    @property
    def schedulable(self) -> bool:
        return self.state is NodeState.READY
