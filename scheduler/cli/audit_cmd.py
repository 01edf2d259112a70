"""`corral audit head | verify | export`: the tamper-evident audit log (README, "Audit").

Every check runs HERE, in the client, over the records' canonical content and hashes (from the API's
admin route /v1/audit/chain, or straight from the database with --db-url-file): the server is never
asked whether its own log is intact.

    head     prints SEQ:HASH of the last record (keep a copy elsewhere; `verify --head` checks it)
    verify   walks the whole chain; exit 0 with one line, or exit 1 naming the first bad record
    export   JSON lines for an auditor: the placements (and every other record) of the jobs whose data
             region is R, and enough of the rest of the chain (seqs and digests only) to check them
             offline up to the head, with sha256 alone
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.client import ApiClient, client
from scheduler.cli.errors import EXIT_JOB_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, fail
from scheduler.cli.output import note
from scheduler.model.audit_chain import GENESIS, ChainEntry, ChainError, ChainVerifier, digest_of, parse_head

__all__ = ["audit_app"]

EXIT_BROKEN = EXIT_JOB_FAILED  # 1: the chain does not verify
EXPORT_FORMAT = 1
PAGE = 5000  # the API's largest chain page

audit_app = typer.Typer(
    name="audit",
    help="The tamper-evident audit log (admins): its head, a full check, an export for auditors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

HeadOpt = Annotated[
    str | None,
    typer.Option(
        "--head", help="SEQ:HASH from an earlier `corral audit head`: the chain must still hold it."
    ),
]
DbUrlFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--db-url-file",
        help="Read the chain from this database (URL on one line in the file) instead of the API.",
    ),
]


def _head_option(text: str | None) -> tuple[int, str] | None:
    if text is None:
        return None
    try:
        return parse_head(text)
    except ValueError as exc:
        fail(f"--head: {exc}: give what `corral audit head` printed", EXIT_USAGE)


def _chain_pages(api: ApiClient, after_seq: int = 0, since: float | None = None) -> Any:
    """Every chain entry from the API, in seq order."""
    params: dict[str, Any] = {"limit": PAGE, "after_seq": after_seq}
    if since is not None:
        params["since"] = since
    while True:
        page = api.page("/v1/audit/chain", **params)
        for item in page.items:
            yield ChainEntry(
                int(item["seq"]), str(item["prev_hash"]), str(item["hash"]), str(item["canonical"])
            )
        if page.cursor is None:
            return
        params = {"limit": PAGE, "after_seq": page.cursor}  # `since` only placed the first page


def _db_entries(url_file: Path) -> Any:
    """Every chain entry straight from the database (no migration, reads only)."""
    try:
        lines = [line.strip() for line in url_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        fail(f"--db-url-file: cannot read {url_file} ({reason}): give a file holding the database URL")
    if len(lines) != 1:
        fail(f"--db-url-file: {url_file} must hold the database URL on one line (found {len(lines)} lines)")
    import sqlalchemy.exc  # only here: the other commands start without SQLAlchemy

    from scheduler.store import audit_log
    from scheduler.store import engine as engines

    try:
        engine = engines.create(lines[0])
    except (ValueError, sqlalchemy.exc.ArgumentError) as exc:
        fail(f"--db-url-file: {url_file}: not a database URL ({' '.join(str(exc).split())[:120]})")
    try:
        yield from audit_log.walk(engine)
    except sqlalchemy.exc.OperationalError as exc:
        reason = " ".join(str(getattr(exc, "orig", exc)).split())[:200]
        if "hash" in reason or "no such column" in reason or "does not exist" in reason:
            fail(
                f"the database's audit table has no hash chain yet ({reason}): "
                "start `corral serve` on it once"
            )
        fail(f"cannot read the database in {url_file}: {reason}", EXIT_UNREACHABLE)
    finally:
        engine.dispose()


@audit_app.command("head")
def head(
    output: Annotated[str, typer.Option("--output", "-o", help="text (SEQ:HASH) or json.")] = "text",
) -> None:
    """Print the last record of the chain as SEQ:HASH (store it elsewhere; also the metric
    corral_audit_head_seq)."""
    if output not in ("text", "json"):
        fail(f"--output: unknown format '{output[:20]}': use text or json")
    found = client().get("/v1/audit/head")
    if output == "json":
        print(json.dumps({"seq": found["seq"], "hash": found["hash"]}))
    else:
        print(f"{found['seq']}:{found['hash']}")


@audit_app.command("verify")
def verify(head: HeadOpt = None, db_url_file: DbUrlFileOpt = None) -> None:
    """Walk the whole chain and recompute every hash here; exit 1 naming the first record that was
    edited, inserted or removed (or the head given that the chain no longer reaches)."""
    expected = _head_option(head)
    verifier = ChainVerifier(expected)
    entries = _db_entries(db_url_file) if db_url_file is not None else _chain_pages(client())
    try:
        for entry in entries:
            verifier.add(entry)
        verifier.finish()
    except ChainError as exc:
        fail(f"audit chain broken at record {exc.seq}: {exc.message}", EXIT_BROKEN)
    where = "the database" if db_url_file is not None else "the API"
    checked = f"; head {expected[0]}:{expected[1][:12]}… found" if expected else ""
    print(
        f"ok: {verifier.count} audit records, chain unbroken (read from {where}), head "
        f"{verifier.last_seq}:{verifier.last_hash}{checked}"
    )


def _when(text: str | None, option: str) -> float | None:
    """Unix seconds, or ISO 8601 (UTC unless it names a zone)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            fail(f"{option}: '{text[:40]}' is neither Unix seconds nor an ISO 8601 time (2024-05-01T00:00Z)")
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        value = parsed.timestamp()
    if not math.isfinite(value) or value < 0:
        fail(f"{option}: '{text[:40]}' is not a time")
    return value


@audit_app.command("export")
def export(
    region: Annotated[str, typer.Option("--region", help="The data region whose placements to export.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="The JSON-lines file to write ('-': stdout).")],
    since: Annotated[
        str | None, typer.Option("--since", help="From this time (Unix seconds or ISO 8601).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Up to this time (Unix seconds or ISO 8601).")
    ] = None,
) -> None:
    """Write, as JSON lines, every audit record of the jobs whose data region is REGION (placements with
    their nodes and regions and the residency check, preemptions, requeues, cancels, ...) between the
    times given, and the rest of the chain from there to the head as seqs and digests only, so that
    an auditor can check it offline with sha256 (README, "Audit")."""
    start, end = _when(since, "--since"), _when(until, "--until")
    if start is not None and end is not None and end < start:
        fail("--until: is before --since: give a window that ends after it starts")
    api = client()
    lines: list[dict[str, Any]] = []
    verifier: ChainVerifier | None = None
    selected = 0
    for entry in _chain_pages(api, since=start):
        if verifier is None:  # the window's first record: the chain is checked from its prev_hash on
            verifier = ChainVerifier()
            verifier.last_seq, verifier.last_hash = entry.seq - 1, entry.prev_hash
        try:
            content = verifier.add(entry)
        except ChainError as exc:
            fail(f"audit chain broken at record {exc.seq}: {exc.message}: not exported", EXIT_BROKEN)
        time = content.get("time")
        inside = isinstance(time, int | float) and (end is None or time <= end)
        if inside and content.get("data_region") == region:
            lines.append({**entry.as_json(), "record": content})
            selected += 1
        else:
            lines.append(
                {
                    "seq": entry.seq,
                    "prev_hash": entry.prev_hash,
                    "hash": entry.hash,
                    "digest": digest_of(entry.canonical),
                }
            )
    head = {"seq": verifier.last_seq, "hash": verifier.last_hash} if verifier else _api_head(api)
    header = {
        "corral_audit_export": EXPORT_FORMAT,
        "region": region,
        "since": start,
        "until": end,
        "records": selected,
        "first_seq": lines[0]["seq"] if lines else None,
        "head": head,
        "hash": "hash = sha256(prev_hash + '\\n' + (sha256(canonical) or digest)); prev_hash of the first"
        " line after this one is the hash of the record before the window",
    }
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in [header, *lines])
    _write(out, text)
    where = "stdout" if str(out) == "-" else str(out)
    span = f"seqs {lines[0]['seq']}-{head['seq']}" if lines else "no records in the window"
    note(
        f"exported {selected} records of region {region} ({span}; "
        f"head {head['seq']}:{head['hash']}) to {where}"
    )


def _api_head(api: ApiClient) -> dict[str, Any]:
    found = api.get("/v1/audit/head")
    return {"seq": int(found["seq"]), "hash": str(found.get("hash", GENESIS))}


def _write(out: Path, text: str) -> None:
    if str(out) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        fail(f"--output: cannot write {out} ({exc.strerror or exc}): give a writable path")
