"""Start-time estimates and what-if: the live scheduling state replayed forward in the simulator."""
