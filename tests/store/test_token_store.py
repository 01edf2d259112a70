"""Tokens in the store (SQLite and PostgreSQL): hashed, limited, revocable, bootstrapped once."""

from __future__ import annotations

import hashlib

import pytest
import sqlalchemy as sa

from scheduler.store.store import Store
from scheduler.store.token_store import (
    BootstrapTokenError,
    TokenLimits,
    TokenNotFound,
    TokenStore,
    new_token,
    prefix_of,
)


def test_create_keeps_only_the_digest_and_a_short_prefix(store: Store) -> None:
    tokens = TokenStore(store.engine)
    limits = TokenLimits(
        queues=("ml-a", "ml-b"), max_priority="normal", allow_protection=True, max_gpus_per_job=16
    )
    token, record = tokens.create(
        "ml-a", limits=limits, description="ci", created_by="admin (token 1)", now=5.0
    )
    assert token.startswith("corral_") and len(token) == len("corral_") + 43
    assert record.prefix == token[:13] == prefix_of(token) and record.limits == limits
    assert (record.team, record.admin, record.created_at, record.revoked_at) == ("ml-a", False, 5.0, None)
    with store.engine.connect() as connection:
        rows = [tuple(map(str, row)) for row in connection.execute(sa.text("SELECT * FROM tokens"))]
    stored = " ".join(" ".join(row) for row in rows)
    assert token not in stored and token[13:] not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert tokens.by_token(token) == record
    assert tokens.by_token(token + "x") is None and tokens.by_token(new_token()) is None


def test_revoke_is_once_and_the_record_stays(store: Store) -> None:
    tokens = TokenStore(store.engine)
    token, record = tokens.create("ml-a", created_by="t", now=1.0)
    revoked = tokens.revoke(record.id, 2.0)
    assert revoked.revoked_at == 2.0 and not revoked.active
    assert tokens.by_token(token) is None
    assert tokens.revoke(record.id, 3.0).revoked_at == 2.0  # again: unchanged
    assert [t.id for t in tokens.list()] == [record.id] and tokens.list(include_revoked=False) == []
    for missing in ("999", "abc", "", "9" * 25):
        with pytest.raises(TokenNotFound):
            tokens.revoke(missing, 4.0)
        assert tokens.get(missing) is None


def test_the_bootstrap_admin_token_is_stored_once(store: Store) -> None:
    tokens = TokenStore(store.engine)
    secret = "a-bootstrap-token-from-a-secret"
    first = tokens.ensure_admin(secret, 1.0)
    again = tokens.ensure_admin(secret, 2.0)
    assert first == again and first.admin and first.team == "admin" and tokens.active_admins() == 1
    assert first.prefix == secret[:4]  # not a corral_ token: less of it is shown
    team_token, _ = tokens.create("ml-a", created_by="t", now=3.0)
    with pytest.raises(BootstrapTokenError, match="not an admin's"):
        tokens.ensure_admin(team_token, 4.0)
    tokens.revoke(first.id, 5.0)
    with pytest.raises(BootstrapTokenError, match="was revoked"):
        tokens.ensure_admin(secret, 6.0)
    assert tokens.active_admins() == 0
