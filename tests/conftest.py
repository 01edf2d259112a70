"""Shared pytest setup. Its presence (with tests/__init__.py) puts the repository root on sys.path,
so test modules anywhere under tests/ can `from tests.builders import ...` however pytest is started."""

import os

from hypothesis import settings

# CI replays the same examples on every run, so main never turns red by chance; locally each run
# explores new ones (HYPOTHESIS_PROFILE=explore, the default outside CI).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "explore"))

# Local test Ray clusters run without Ray 2.60's token auth (loopback only).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
