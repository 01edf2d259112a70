"""Shared pytest setup. Its presence (with tests/__init__.py) puts the repository root on sys.path,
so test modules anywhere under tests/ can `from tests.builders import ...` however pytest is started."""

import os

import pytest
from hypothesis import settings

# CI replays the same examples on every run, so main never turns red by chance; locally each run
# explores new ones (HYPOTHESIS_PROFILE=explore, the default outside CI).
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "explore"))

# Local test Ray clusters run without Ray 2.60's token auth (loopback only).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def pytest_terminal_summary(terminalreporter: object) -> None:
    """Print the chaos runs' counts (tests/chaos) at the end of the run, passed or failed. They
    travel as the test reports' user properties, so this also works under pytest-xdist."""
    import json

    stats = getattr(terminalreporter, "stats", {})
    for outcome in ("passed", "failed"):
        for report in stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", []):
                if name == "chaos_counts" and getattr(report, "when", "") == "call":
                    counts = json.loads(value)
                    title = f"chaos counts ({counts['store']}, seed {counts['seed']}): {outcome}"
                    terminalreporter.write_sep("-", title)  # type: ignore[attr-defined]
                    terminalreporter.write_line(value)  # type: ignore[attr-defined]


# The modules that take longest, in the order to start them (minutes each under load). With
# `--dist loadfile` a worker takes whole modules, the next one when it is done: started last, the
# two chaos runs made a 5-minute tail on one worker while the other sat idle. Longest first.
LONGEST_FIRST = (
    "tests/chaos/test_chaos_postgresql.py",
    "tests/chaos/test_chaos_sqlite.py",
    "tests/e2e/test_failover.py",
    "tests/e2e/test_hardening.py",
    "tests/e2e/test_live.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first (xdist hands modules out in collection order: `--no-loadscope-reorder`
    in pyproject's addopts keeps it from sorting them by test count instead); otherwise unchanged."""

    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
