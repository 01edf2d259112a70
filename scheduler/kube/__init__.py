"""Kubernetes: where the Ray nodes run (region, zone, rack, GPU product, cordons) and what that
means for scheduling."""
