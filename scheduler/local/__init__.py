"""Local installs: a Ray cluster of simulated GPU nodes on this machine (used by `corral up`)."""

from scheduler.local.ray_cluster import LocalRayCluster, LocalRayClusterError

__all__ = ["LocalRayCluster", "LocalRayClusterError"]
