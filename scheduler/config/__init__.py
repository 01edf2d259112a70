"""Configuration read from files and the environment, for the controller, the simulator and the chart.

The cluster file (nodes, queues, priority classes), its `policy:` knobs and CORRAL_POLICY_* are read
here and nowhere else: scheduler/model and scheduler/policy stay pure.
"""

from scheduler.config.cluster_file import ClusterFileError, ensure_queues, load_cluster, parse_cluster
from scheduler.config.live import LiveConfig, default_cluster_yaml, load_live_config, parse_live_config
from scheduler.config.policy import PolicyConfigError, load_policy, policy_from_env, resolve_policy

__all__ = [
    "ClusterFileError",
    "LiveConfig",
    "PolicyConfigError",
    "default_cluster_yaml",
    "ensure_queues",
    "load_cluster",
    "load_live_config",
    "load_policy",
    "parse_cluster",
    "parse_live_config",
    "policy_from_env",
    "resolve_policy",
]
