"""API tokens in the store: created, listed, looked up by digest, revoked.

A token is `corral_` + 43 random URL-safe characters (256 bits). The store keeps only its SHA-256
digest and a short non-secret prefix (`corral_AbCdEf`) so people can tell tokens apart; the token
itself is returned once, by `create`, and never stored or logged. Revoking keeps the row (for the
record) with `revoked_at` set; a revoked token no longer authenticates.

`ensure_admin` is the bootstrap of `corral serve`: the admin token from a Secret or `corral up` is
stored (hashed) on first start and found again on every later one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from scheduler.model.records import AuditRecord
from scheduler.store import audit_log
from scheduler.store import engine as engines
from scheduler.store.schema import tokens

__all__ = [
    "TOKEN_PREFIX",
    "BootstrapTokenError",
    "TokenLimits",
    "TokenNotFound",
    "TokenRecord",
    "TokenStore",
    "digest_of",
    "new_token",
    "prefix_of",
]

TOKEN_PREFIX = "corral_"
_SHOWN = 6  # random characters of a token kept in its prefix


class TokenNotFound(LookupError):
    pass


class BootstrapTokenError(ValueError):
    """The bootstrap admin token matches a row that is not an active admin token (one line)."""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def prefix_of(token: str) -> str:
    """The non-secret start of a token shown in listings (a bootstrap token shows less of itself)."""
    if token.startswith(TOKEN_PREFIX):
        return token[: len(TOKEN_PREFIX) + _SHOWN]
    return token[:4]


@dataclass(frozen=True, slots=True)
class TokenLimits:
    """What a team token may submit. None means no limit; admin tokens ignore them."""

    queues: tuple[str, ...] | None = None
    max_priority: str | None = None
    allow_protection: bool = False  # preemptible: false, or min_runtime_s above the policy default
    max_gpus_per_job: int | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    prefix: str
    description: str
    team: str
    admin: bool
    limits: TokenLimits
    created_at: float
    created_by: str
    revoked_at: float | None = None
    digest: str = ""  # for the constant-time check of a lookup; never shown

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _record(row: RowMapping) -> TokenRecord:
    queues = row["queues"]
    return TokenRecord(
        id=str(row["id"]),
        prefix=row["prefix"],
        description=row["description"],
        team=row["team"],
        admin=bool(row["admin"]),
        limits=TokenLimits(
            queues=tuple(queues) if queues is not None else None,
            max_priority=row["max_priority"],
            allow_protection=bool(row["allow_protection"]),
            max_gpus_per_job=row["max_gpus_per_job"],
        ),
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
        digest=row["digest"],
    )


def _audit(record: TokenRecord, decision: str, now: float, actor: str) -> AuditRecord:
    """The audit record of a token's creation or revocation: never the token, only its id and prefix."""
    limits = record.limits
    what = "admin" if record.admin else "team"
    parts = [f"token {record.id} ({record.prefix}) of {what} {record.team}"]
    if limits.queues is not None:
        parts.append(f"queues={','.join(limits.queues)}")
    if limits.max_priority is not None:
        parts.append(f"max-priority={limits.max_priority}")
    if limits.max_gpus_per_job is not None:
        parts.append(f"max-gpus={limits.max_gpus_per_job}")
    if limits.allow_protection:
        parts.append("non-preemptible ok")
    return AuditRecord(
        now, "", decision, detail=" ".join(parts), private_detail=record.description, actor=actor
    )


def _pk(token_id: str) -> int | None:
    if not (token_id.isascii() and token_id.isdigit()) or len(token_id) > 19:
        return None
    value = int(token_id)
    return value if value < 2**63 else None


class TokenStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(
        self,
        team: str,
        *,
        admin: bool = False,
        limits: TokenLimits = TokenLimits(),
        description: str = "",
        created_by: str,
        now: float,
        token: str | None = None,
    ) -> tuple[str, TokenRecord]:
        """(the token, its record). The token is returned here only; pass `token` to store a given one."""
        plain = token if token is not None else new_token()
        values: dict[str, Any] = {
            "digest": digest_of(plain),
            "prefix": prefix_of(plain),
            "description": description,
            "team": team,
            "admin": admin,
            "queues": list(limits.queues) if limits.queues is not None else None,
            "max_priority": limits.max_priority,
            "allow_protection": limits.allow_protection,
            "max_gpus_per_job": limits.max_gpus_per_job,
            "created_at": now,
            "created_by": created_by,
            "revoked_at": None,
        }
        with engines.write(self._engine) as connection:
            key = connection.execute(sa.insert(tokens), values).inserted_primary_key
            assert key is not None
            row = connection.execute(sa.select(tokens).where(tokens.c.id == key[0])).mappings().one()
            record = _record(row)
            audit_log.append(connection, [_audit(record, "token-create", now, created_by)])
        return plain, record

    def by_token(self, token: str) -> TokenRecord | None:
        """The active token's record, or None (unknown or revoked)."""
        digest = digest_of(token)
        query = sa.select(tokens).where(tokens.c.digest == digest, tokens.c.revoked_at.is_(None))
        with engines.read(self._engine) as connection:
            row = connection.execute(query).mappings().first()
        if row is None or not hmac.compare_digest(str(row["digest"]), digest):
            return None
        return _record(row)

    def get(self, token_id: str) -> TokenRecord | None:
        pk = _pk(token_id)
        if pk is None:
            return None
        with engines.read(self._engine) as connection:
            row = connection.execute(sa.select(tokens).where(tokens.c.id == pk)).mappings().first()
        return None if row is None else _record(row)

    def list(self, *, include_revoked: bool = True) -> Sequence[TokenRecord]:
        query = sa.select(tokens).order_by(tokens.c.id)
        if not include_revoked:
            query = query.where(tokens.c.revoked_at.is_(None))
        with engines.read(self._engine) as connection:
            return [_record(row) for row in connection.execute(query).mappings()]

    def active_admins(self) -> int:
        query = sa.select(sa.func.count()).where(tokens.c.admin.is_(True), tokens.c.revoked_at.is_(None))
        with engines.read(self._engine) as connection:
            return int(connection.execute(query).scalar_one())

    def revoke(self, token_id: str, now: float, by: str = "") -> TokenRecord:
        """Revoke (once; revoking again changes nothing) and return the record; TokenNotFound. The
        revoke is audited (decision token-revoke, actor `by`) in the same transaction."""
        pk = _pk(token_id)
        if pk is None:
            raise TokenNotFound(token_id)
        with engines.write(self._engine) as connection:
            changed = connection.execute(
                sa.update(tokens)
                .where(tokens.c.id == pk, tokens.c.revoked_at.is_(None))
                .values(revoked_at=now)
            ).rowcount
            row = connection.execute(sa.select(tokens).where(tokens.c.id == pk)).mappings().first()
            if row is None:
                raise TokenNotFound(token_id)
            record = _record(row)
            if changed:
                audit_log.append(connection, [_audit(record, "token-revoke", now, by or "unknown")])
        return record

    def ensure_admin(self, token: str, now: float, created_by: str = "corral serve") -> TokenRecord:
        """The admin row of this bootstrap token, stored (hashed) the first time; BootstrapTokenError if
        the token is known but revoked or not an admin's."""
        digest = digest_of(token)
        for _ in range(2):  # a second replica may insert the same row at the same moment
            with engines.read(self._engine) as connection:
                row = (
                    connection.execute(sa.select(tokens).where(tokens.c.digest == digest)).mappings().first()
                )
            if row is not None:
                found = _record(row)
                if not found.active:
                    raise BootstrapTokenError(
                        f"the admin token was revoked (token {found.id}): give a new one "
                        "(--admin-token-file or CORRAL_ADMIN_TOKEN)"
                    )
                if not found.admin:
                    raise BootstrapTokenError(
                        f"the admin token is team {found.team!r}'s token {found.id}, not an admin's: "
                        "give a new admin token (--admin-token-file or CORRAL_ADMIN_TOKEN)"
                    )
                return found
            try:
                return self.create(
                    "admin",
                    admin=True,
                    description="bootstrap admin token",
                    created_by=created_by,
                    now=now,
                    token=token,
                )[1]
            except IntegrityError:
                continue
        raise BootstrapTokenError("the admin token could not be stored: try again")  # pragma: no cover
