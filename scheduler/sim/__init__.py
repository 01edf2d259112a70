"""Trace-driven simulation: the live policy on a virtual clock."""
