"""Exit codes and one-line errors for the CLI (documented in README and --help)."""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_OK = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_DENIED = 4
EXIT_UNREACHABLE = 5

# The exit codes (here and in scheduler/cli/client.py, which maps HTTP statuses to them).
EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the job failed (with --wait) or the server failed (5xx); 2 usage or "
    "validation error; 3 not found; 4 bad, revoked or unusable token, or not allowed; 5 server "
    "unreachable, or still overloaded (429) after retries."
)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print one line to stderr and exit: no traceback for a user's mistake."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
