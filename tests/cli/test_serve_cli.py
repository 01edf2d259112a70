"""`corral serve` and `corral status` keep secrets out of argv, messages and files, and refuse a bad
bootstrap admin token or database URL in one line (exit 2) before starting anything."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from scheduler.cli.context import Context, save_context
from scheduler.config.live import default_cluster_yaml
from scheduler.store.store import Store
from scheduler.store.token_store import TokenStore
from tests.api.harness import Cli, free_port, one_line_error

PASSWORD = "s3cr3t-pa55word"


def serve_error(run: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """`serve` failed with `code`; its last stderr line is the one-line error (the lines before it are
    the server's own log, e.g. the schema migration), and there is no traceback."""
    assert run.returncode == code, (run.returncode, run.stderr)
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in run.stderr, run.stderr
    for fragment in fragments:
        assert fragment in last, (fragment, last)


def _serve(tmp: Path) -> Cli:
    cli = Cli(tmp / "home", "http://127.0.0.1:1", None)
    config = tmp / "cluster.yaml"
    config.write_text(default_cluster_yaml(2, 8, ["cn-north"], 1))
    cli.env.pop("RAY_AUTH_MODE", None)
    return cli


def serve_args(tmp: Path, *extra: str | Path) -> list[str | Path]:
    return [
        "serve", "--config", tmp / "cluster.yaml", "--ray-address", "127.0.0.1:1",
        "--log-dir", tmp / "logs", "--port", str(free_port()), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "on one line (found 0 lines)"),
        ("first-line-of-a-token\nsecond-line-of-a-token\n", "(found 2 lines)"),
        ("short\n", "is 5 characters: use at least 16"),
        ("a-token-with\x1b-an-escape-inside\n", "holds a control character"),
        ("a token with spaces in it\n", "holds a space"),
    ],
)
def test_a_malformed_admin_token_file_is_one_line_exit_2(tmp_path: Path, text: str, fragment: str) -> None:
    cli = _serve(tmp_path)
    token_file = tmp_path / "admin-token"
    token_file.write_text(text)
    db = f"sqlite:///{tmp_path / 'corral.db'}"
    run = cli(*serve_args(tmp_path, "--admin-token-file", token_file), env={"CORRAL_DB_URL": db})
    one_line_error(run, 2, "--admin-token-file", fragment)
    assert not (tmp_path / "corral.db").exists()  # refused before anything was opened


def test_serve_needs_a_database_url_and_an_admin_token(tmp_path: Path) -> None:
    cli = _serve(tmp_path)
    one_line_error(cli(*serve_args(tmp_path)), 2, "--db: give the database URL with CORRAL_DB_URL")
    db = f"sqlite:///{tmp_path / 'corral.db'}"
    one_line_error(
        cli(*serve_args(tmp_path, "--admin-token-file", tmp_path / "missing"), env={"CORRAL_DB_URL": db}),
        2,
        "--admin-token-file: cannot read",
    )
    serve_error(
        cli(*serve_args(tmp_path), env={"CORRAL_DB_URL": db}),
        2,
        "no admin token is stored yet and none was given",
    )
    # a bootstrap token that is a team's token is refused, naming the option
    store = Store.open(db)
    team_token, _ = TokenStore(store.engine).create("ml-a", created_by="t", now=1.0)
    store.close()
    serve_error(
        cli(*serve_args(tmp_path), env={"CORRAL_DB_URL": db, "CORRAL_ADMIN_TOKEN": team_token}),
        2,
        "CORRAL_ADMIN_TOKEN: the admin token is team 'ml-a'",
    )


def test_the_database_password_never_reaches_a_message(tmp_path: Path) -> None:
    cli = _serve(tmp_path)
    url = f"postgresql://corral:{PASSWORD}@127.0.0.1:{free_port()}/corral"
    env = {"CORRAL_DB_URL": url, "CORRAL_ADMIN_TOKEN": "corral_" + "x" * 30}
    run = cli(*serve_args(tmp_path), env=env)
    serve_error(run, 1, "--db: cannot open the database at postgresql://corral:***@127.0.0.1")
    assert PASSWORD not in run.stderr + run.stdout
    from_file = tmp_path / "db-url"
    from_file.write_text(url + "\n")
    run = cli(
        *serve_args(tmp_path, "--db-url-file", from_file),
        env={"CORRAL_ADMIN_TOKEN": env["CORRAL_ADMIN_TOKEN"]},
    )
    serve_error(run, 1, "postgresql://corral:***@")
    assert PASSWORD not in run.stderr + run.stdout
    garbled = f"corral:{PASSWORD}@db.example/corral"  # no scheme: not a URL at all
    run = cli(*serve_args(tmp_path), env={**env, "CORRAL_DB_URL": garbled})
    one_line_error(run, 2, "--db: not a database URL")
    assert PASSWORD not in run.stderr


def test_status_shows_the_store_without_its_password(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    url = f"postgresql://corral:{PASSWORD}@db.example:5432/corral"
    (home / "local.json").write_text(
        json.dumps({"db_url": url, "api_url": f"http://127.0.0.1:{free_port()}"})
    )
    cli = Cli(home, "http://127.0.0.1:1", None)
    table, as_json = cli("status"), cli("status", "-o", "json")
    assert table.returncode == 5 and as_json.returncode == 5  # nothing runs
    assert PASSWORD not in table.stdout + as_json.stdout
    assert "postgresql://corral:***@db.example:5432/corral" in table.stdout
    assert json.loads(as_json.stdout)["store"]["url"] == "postgresql://corral:***@db.example:5432/corral"


def test_the_context_file_is_private_from_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "new-home"
    monkeypatch.setenv("CORRAL_HOME", str(home))
    old = os.umask(0o022)  # a usual umask: files would be world-readable by default
    try:
        path = save_context(Context(api_url="http://127.0.0.1:1", token="corral_secret"))
        again = save_context(Context(api_url="http://127.0.0.1:2", token="corral_other"))
    finally:
        os.umask(old)
    assert path == again and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert sorted(p.name for p in home.iterdir()) == ["context.yaml"]
    assert "corral_other" in path.read_text()
