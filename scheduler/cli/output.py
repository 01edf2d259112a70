"""Rendering for read commands: `-o table` (rich), `-o json`, `-o yaml`. Data goes to stdout only;
messages go to stderr, so `corral jobs -o json | jq` always gets clean JSON.

Everything a user (or another team) could have written — job names, commands, reasons, messages,
descriptions — reaches the terminal through `safe()`: control characters and escape sequences are
shown as `\x1b`, `\n` and so on, never sent raw (a job name must not be able to move the cursor,
recolour the screen or forge lines), and table cells are plain `Text`, so rich markup in data
(`[red]`) is printed as written, not interpreted. JSON and YAML output carry the data as it is
(both formats escape control characters themselves).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scheduler.cli.errors import fail
from scheduler.client.errors import safe

__all__ = [
    "FORMATS",
    "Column",
    "OutputOpt",
    "check_format",
    "duration",
    "emit",
    "note",
    "render_table",
    "safe",
    "stderr",
    "stdout",
]

FORMATS = ("table", "json", "yaml")

OutputOpt = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json or yaml.")]

Column = tuple[str, Callable[[dict[str, Any]], str]]  # header, cell from a row

# Piped output (scripts, `| grep`) gets whole rows instead of rows folded to 80 columns.
_PIPED_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 1000
stdout = Console(soft_wrap=False, width=_PIPED_WIDTH)
stderr = Console(stderr=True, soft_wrap=True)


def note(message: str) -> None:
    """A message for the user on stderr (never data), escaped, without rich markup."""
    print(safe(message), file=sys.stderr, flush=True)


def check_format(fmt: str) -> str:
    value = fmt.lower()
    if value not in FORMATS:
        fail(f"--output: must be table, json or yaml (got '{safe(fmt)[:40]}')")
    return value


def dump(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


# The free-text columns wrap so that the short ones (ids, times, states) keep their width at 80.
_WRAPPED = frozenset({"REASON", "LABELS", "JOBS", "MESSAGE", "DETAIL", "NODES"})


def render_table(
    rows: Sequence[dict[str, Any]], columns: Sequence[Column], title: str | None = None
) -> Table:
    table = Table(title=title, box=None, header_style="bold", pad_edge=False, show_edge=False)
    for header, _ in columns:
        table.add_column(header, overflow="fold", no_wrap=header not in _WRAPPED)
    for row in rows:
        table.add_row(*(Text(safe(cell(row))) for _, cell in columns))
    return table


def emit(data: Any, fmt: str, table: Callable[[], Any]) -> None:
    """Print `data` as JSON/YAML, or the renderable `table()` builds, on stdout."""
    if fmt == "table":
        stdout.print(table())
    else:
        sys.stdout.write(dump(data, fmt))
        if fmt == "json":
            sys.stdout.write("\n")
        sys.stdout.flush()


def duration(seconds: float | None) -> str:
    """Slurm's [D-]HH:MM:SS; '-' when unknown."""
    if seconds is None:
        return "-"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{text}" if days else text
