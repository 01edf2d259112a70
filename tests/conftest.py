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
