"""`corral token create | list | revoke`: per-team tokens, managed by an admin.

`create` prints the token as the LAST line of stdout (and nothing else there), so a script can take
it with `| tail -n 1`; what it is for goes to stderr. The token is shown this once: the server keeps
only its digest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import typer

from scheduler.cli.client import client
from scheduler.cli.errors import fail
from scheduler.cli.output import Column, OutputOpt, check_format, emit, note, render_table

__all__ = ["token_app"]

token_app = typer.Typer(
    name="token",
    help="Manage API tokens (admins): create one per team, list them, revoke them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _when(t: float | None) -> str:
    return "-" if t is None else datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def _limits(t: dict[str, Any]) -> str:
    if t["admin"]:
        return "admin (no limits)"
    parts = []
    if t.get("queues") is not None:
        parts.append(f"queues={','.join(t['queues'])}")
    if t.get("max_priority") is not None:
        parts.append(f"max-priority={t['max_priority']}")
    if t.get("max_gpus_per_job") is not None:
        parts.append(f"max-gpus={t['max_gpus_per_job']}")
    if t.get("allow_protection"):
        parts.append("non-preemptible ok")
    return " ".join(parts) or "-"


TOKEN_COLUMNS: list[Column] = [
    ("ID", lambda t: str(t["id"])),
    ("PREFIX", lambda t: f"{t['prefix']}…"),
    ("TEAM", lambda t: str(t["team"])),
    ("LIMITS", _limits),
    ("STATE", lambda t: "active" if t["active"] else f"revoked {_when(t.get('revoked_at'))}"),
    ("CREATED", lambda t: _when(t["created_at"])),
    ("BY", lambda t: str(t["created_by"])),
    ("DESCRIPTION", lambda t: str(t["description"]) or "-"),
]


@token_app.command("create")
def create(
    team: Annotated[str, typer.Option("--team", help="The team the token acts for (required).")],
    queues: Annotated[
        str | None, typer.Option("--queues", help="Comma-separated queues it may submit to (default: all).")
    ] = None,
    max_priority: Annotated[
        str | None, typer.Option("--max-priority", help="Highest priority class it may ask for.")
    ] = None,
    allow_non_preemptible: Annotated[
        bool,
        typer.Option(
            "--allow-non-preemptible",
            help="May submit `preemptible: false` and min_runtime_s above the policy default.",
        ),
    ] = False,
    max_gpus: Annotated[int | None, typer.Option("--max-gpus", help="Most GPUs per job.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin token (sees and manages all).")] = False,
    description: Annotated[str, typer.Option("--description", help="What or whom it is for.")] = "",
) -> None:
    """Create a token and print it (last line of stdout): it is shown this once."""
    body: dict[str, Any] = {"team": team, "description": description, "admin": admin}
    if queues is not None:
        names = [q.strip() for q in queues.split(",") if q.strip()]
        if not names:
            fail("--queues: give at least one queue name, e.g. --queues ml-a,ml-b")
        body["queues"] = names
    if max_priority is not None:
        body["max_priority"] = max_priority
    if allow_non_preemptible:
        body["allow_protection"] = True
    if max_gpus is not None:
        body["max_gpus_per_job"] = max_gpus
    created = client().post("/v1/tokens", body).json()
    note(
        f"created token {created['id']} for team {created['team']} ({_limits(created)}); "
        "it is shown only now: store it (e.g. export CORRAL_TOKEN=...)"
    )
    print(created["token"], flush=True)


@token_app.command("list")
def list_tokens(output: OutputOpt = "table") -> None:
    """Every token with its team, limits and state (never the token itself)."""
    fmt = check_format(output)
    rows: list[dict[str, Any]] = client().get("/v1/tokens")
    emit(rows, fmt, lambda: render_table(rows, TOKEN_COLUMNS))


@token_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (see `corral token list`).")],
) -> None:
    """Revoke a token: from now on it is refused (401)."""
    revoked = client().delete(f"/v1/tokens/{quote(token_id, safe='')}").json()
    note(f"revoked token {revoked['id']} ({revoked['prefix']}…) of team {revoked['team']}")
