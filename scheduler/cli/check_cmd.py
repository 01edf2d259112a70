"""`corral check`: verify the invariants from the store and from Ray, print each violation.

Reads the store directly (not the API): the database URL from --db-url-file, else CORRAL_DB_URL,
else the local install's (`corral up`, CORRAL_HOME/local.json). Ray's address from --ray-address,
else CORRAL_RAY_ADDRESS, else the local install's. Exit codes: 0 every invariant holds, 1 at least
one violation (each on its own line, with the ids involved), 2 usage, 5 the store or Ray cannot be
reached. See scheduler/check/ and README (`corral check`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from scheduler.cli.context import corral_home
from scheduler.cli.errors import EXIT_UNREACHABLE, EXIT_USAGE, fail
from scheduler.cli.output import safe

_GCS_CONNECT_S = 3.0


def check(
    db_url_file: Annotated[
        Path | None,
        typer.Option(
            help="A file holding the database URL (default: CORRAL_DB_URL, else the local install's)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            envvar="CORRAL_RAY_ADDRESS",
            help="Ray GCS address host:port (default: the local install's).",
            show_default=False,
        ),
    ] = None,
    ray_namespace: Annotated[
        str, typer.Option(help="Ray namespace of Corral's groups and actors.")
    ] = "corral",
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Check the store alone.")] = False,
    acknowledged: Annotated[
        Path | None,
        typer.Option(help="A file of job ids the API acknowledged, one per line: each must be in the store."),
    ] = None,
    settle: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=600.0,
            help="Seconds before the second reading that confirms a finding comparing the store with Ray.",
        ),
    ] = 3.0,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """Verify what must always hold (no GPU held twice, capacity, Ray's view, quotas, gangs, data
    regions, no stray placement group, no lost job). Exit 0 all hold, 1 a violation (each printed
    with its ids), 2 usage, 5 the store or Ray unreachable."""
    if output not in ("table", "json"):
        fail("-o/--output: use table or json", EXIT_USAGE)
    local = _local_state()
    db_url = _db_url(db_url_file, local)
    ids = _acknowledged(acknowledged) if acknowledged is not None else ()
    address = None if no_ray else (ray_address or _str(local.get("ray_address")))
    if not no_ray and not address:
        fail("no Ray address: give --ray-address HOST:PORT (or CORRAL_RAY_ADDRESS), or --no-ray", EXIT_USAGE)
    if address and not ray_address:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # `corral up`'s private loopback cluster

    from scheduler.check.run import run_check  # SQLAlchemy and Ray take a while to import: only here
    from scheduler.store import engine as engines
    from scheduler.store.store import Store

    store = Store(_engine(engines, db_url))
    try:
        if address:
            _connect_ray(address, ray_namespace)
        try:
            report = run_check(store, ray=address is not None, acknowledged=ids, settle_s=settle)
        except Exception as exc:  # the store or Ray went away mid-check, or the schema is not Corral's
            fail(f"cannot read the store or Ray: {_one_line(exc)}", EXIT_UNREACHABLE)
    finally:
        store.close()
    if output == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        for v in report.violations:
            print(f"{v.kind:<28} {safe(v.message)}")
    where = "store and Ray" if report.ray_checked else "store only (Ray not checked)"
    cleared = (
        f"; {len(report.cleared)} finding(s) in flight cleared on a second reading {settle:g} s later"
        if report.cleared
        else ""
    )
    if report.ok:
        print(
            f"ok: every invariant holds ({where}, {report.active_jobs} active jobs{cleared})", file=sys.stderr
        )
        return
    print(f"{len(report.violations)} violation(s) ({where}{cleared})", file=sys.stderr)
    raise SystemExit(1)


def _local_state() -> dict[str, Any]:
    try:
        data = json.loads((corral_home() / "local.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _db_url(db_url_file: Path | None, local: dict[str, Any]) -> str:
    if db_url_file is not None:
        try:
            url = db_url_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"--db-url-file: cannot read {db_url_file} ({exc.strerror})", EXIT_USAGE)
        if not url:
            fail(f"--db-url-file: {db_url_file} is empty", EXIT_USAGE)
        return url
    found = os.environ.get("CORRAL_DB_URL") or _str(local.get("db_url"))
    if not found:
        fail(
            "no store: give --db-url-file PATH or CORRAL_DB_URL (or run `corral up` for a local install)",
            EXIT_USAGE,
        )
    if "***" in found:  # local.json keeps the URL without its password
        fail("the local install's database URL has a password: give it with CORRAL_DB_URL", EXIT_USAGE)
    return found


def _engine(engines: Any, url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        fail("not a database URL: use sqlite:///PATH or postgresql://USER@HOST/DB", EXIT_USAGE)
    database = parsed.database or ""
    if (
        parsed.get_backend_name() == "sqlite"
        and database not in ("", ":memory:")
        and not Path(database).is_file()
    ):
        fail(f"no store at {database}", EXIT_UNREACHABLE)  # never create an empty store by checking it
    try:
        return engines.create(url)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def _acknowledged(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        fail(f"--acknowledged: cannot read {path} ({exc.strerror})", EXIT_USAGE)
    ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    bad = next((i for i in ids if not (i.isascii() and i.isdigit())), None)
    if bad is not None:
        fail(f"--acknowledged: {safe(bad)!s} in {path} is not a job id (one decimal id per line)", EXIT_USAGE)
    return [str(int(i)) for i in ids]


def _connect_ray(address: str, namespace: str) -> None:
    from scheduler.backends.ray_state import gcs_reachable

    reachable = gcs_reachable(address, _GCS_CONNECT_S)  # ray.init waits long on a dead address
    if reachable != "ok":
        fail(reachable, EXIT_UNREACHABLE)
    import ray

    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:
        fail(f"cannot connect to Ray at {address}: {_one_line(exc)}", EXIT_UNREACHABLE)


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."
