"""Backends: where decisions take effect (the simulator's virtual cluster, Ray, Kubernetes)."""
