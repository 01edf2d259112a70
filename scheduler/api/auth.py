"""Bearer tokens → principals (a team with its token's limits, or an admin).

Tokens live in the store, hashed (scheduler/store/token_store.py). `TokenCache` answers most lookups
from memory: entries are keyed by the token's SHA-256 digest, so a lookup's timing says nothing
useful about valid tokens (finding one would take a preimage), and the store confirms a digest
with hmac.compare_digest. This process creates and revokes tokens, and drops its cache when it
does, so a revoke takes effect at once for new requests here; other replicas see it within
`ttl_s`. Unknown tokens are cached too (briefly), so a flood of wrong tokens costs no queries.

`submission_denied` checks a spec against a token's limits (queues, highest priority class,
protection from preemption, GPUs per job), as Kueue's LocalQueues and Slurm's QOS limit what an
account may ask for. Admins have no limits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scheduler.model.job import JobSpec
from scheduler.store.token_store import TokenRecord, TokenStore, digest_of

__all__ = ["Principal", "TokenCache", "principal_of", "submission_denied"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a team (with its token's limits), or an admin who sees and acts on all."""

    team: str
    admin: bool = False
    token_id: str = ""
    queues: frozenset[str] | None = None  # queues it may submit to; None = all
    max_priority: str | None = None  # highest priority class it may ask for; None = any
    allow_protection: bool = False  # may submit preemptible: false / a longer min_runtime_s
    max_gpus_per_job: int | None = None

    def may_see(self, team: str) -> bool:
        return self.admin or team == self.team

    def may_submit_to(self, queue: str) -> bool:
        return self.admin or self.queues is None or queue in self.queues


def principal_of(record: TokenRecord) -> Principal:
    limits = record.limits
    return Principal(
        team=record.team,
        admin=record.admin,
        token_id=record.id,
        queues=frozenset(limits.queues) if limits.queues is not None else None,
        max_priority=limits.max_priority,
        allow_protection=limits.allow_protection,
        max_gpus_per_job=limits.max_gpus_per_job,
    )


def submission_denied(
    who: Principal,
    spec: JobSpec,
    priority_values: Mapping[str, int],
    default_min_runtime_s: float,
) -> tuple[str, str] | None:
    """(field, one-line message) of the first token limit this spec exceeds, or None."""
    if who.admin:
        return None
    if not who.may_submit_to(spec.queue):
        allowed = ", ".join(sorted(who.queues or ()))
        return "queue", (
            f"spec.queue: this token of team {who.team!r} may not submit to {spec.queue!r}: "
            f"use one of {allowed}, or ask an admin for a token with --queues {spec.queue}"
        )
    limit = who.max_priority
    if limit is not None and spec.priority != limit:
        asked, most = priority_values.get(spec.priority), priority_values.get(limit)
        # an unknown class is check_spec's 400; a limit naming a class that left the config allows none
        if asked is not None and (most is None or asked > most):
            return "priority", (
                f"spec.priority: this token may submit up to priority {limit!r} (asked {spec.priority!r}): "
                "ask an admin for a token with a higher --max-priority"
            )
    if not who.allow_protection:
        if not spec.preemptible:
            return "preemptible", (
                "spec.preemptible: this token may not submit non-preemptible jobs: drop "
                "`preemptible: false`, or ask an admin for a token with --allow-non-preemptible"
            )
        if spec.min_runtime_s > default_min_runtime_s:
            return "min_runtime_s", (
                f"spec.min_runtime_s: this token may ask for at most {default_min_runtime_s:g} s "
                f"(asked {spec.min_runtime_s:g} s): lower it, or ask an admin for a token with "
                "--allow-non-preemptible"
            )
    cap = who.max_gpus_per_job
    if cap is not None and spec.gpus > cap:
        return "gpus_per_node", (
            f"spec.gpus_per_node: this token may use up to {cap} GPUs per job (asked {spec.nodes} × "
            f"{spec.gpus_per_node} = {spec.gpus}): ask for fewer, or ask an admin for a token with a "
            "higher --max-gpus"
        )
    return None


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: Principal | None
    expires: float


class TokenCache:
    """Token → Principal through the store, cached by digest for `ttl_s` (hits and misses alike)."""

    def __init__(
        self,
        store: TokenStore,
        *,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by invalidate(): a lookup that raced with it is not cached

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """(found in the cache, principal): never touches the store (safe on the event loop)."""
        entry = self._entries.get(digest_of(token))
        if entry is None or entry.expires < self._clock():
            return False, None
        return True, entry.principal

    def lookup(self, token: str | None) -> Principal | None:
        """The principal of an active token, or None; may query the store (call it off the loop)."""
        if not token:
            return None
        hit, principal = self.cached(token)
        if hit:
            return principal
        generation = self._generation
        record = self._store.by_token(token)
        principal = principal_of(record) if record is not None else None
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()  # simplest bound; a refill costs one query per token
                self._entries[digest_of(token)] = _Entry(principal, self._clock() + self._ttl_s)
        return principal

    def invalidate(self) -> None:
        """Forget everything (after a token was created or revoked by this process)."""
        with self._lock:
            self._generation += 1
            self._entries = {}
