"""Bearer tokens → principals (a team, or an admin).

The tokens file is YAML, read once at start-up:

    tokens:
      - {token: "s3cret-a", team: ml-a}                       # may submit to any queue
      - {token: "s3cret-b", team: ml-b, queues: [vision]}     # may submit to these queues only
      - {token: "s3cret-root", team: ops, admin: true}

`queues` (optional) limits which queues a team's token may submit to, as Kueue's LocalQueues limit
a namespace to some ClusterQueues; without it a team may use every queue. Admins may use all.

A lookup compares the SHA-256 digest of the presented token with each known digest using
hmac.compare_digest, so the time a wrong token takes tells nothing about the right ones; the
tokens themselves are not kept.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Principal", "TokenError", "TokenTable"]


class TokenError(ValueError):
    """A tokens file that cannot be used (one line: file, entry, problem)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a team, and whether it may see and act on every team's jobs."""

    team: str
    admin: bool = False
    queues: frozenset[str] | None = None  # queues it may submit to; None = all

    def may_see(self, team: str) -> bool:
        return self.admin or team == self.team

    def may_submit_to(self, queue: str) -> bool:
        return self.admin or self.queues is None or queue in self.queues


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        for token, principal in entries:
            if not token:
                raise TokenError("a token must not be empty")
            self._by_digest[_digest(token)] = principal

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, token: str | None) -> Principal | None:
        """The principal of `token`, or None for a missing or unknown token."""
        if not token:
            return None
        digest = _digest(token)
        for known, principal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return principal
        return None

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        try:
            data: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise TokenError(f"{path}: cannot read ({exc.strerror or exc})") from None
        except yaml.YAMLError as exc:
            raise TokenError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
        return cls.from_data(data, source=str(path))

    @classmethod
    def from_data(cls, data: Any, source: str = "tokens") -> TokenTable:
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise TokenError(f"{source}: expected `tokens: [{{token: ..., team: ..., admin: false}}]`")
        entries: list[tuple[str, Principal]] = []
        for i, item in enumerate(data["tokens"]):
            if not isinstance(item, dict):
                raise TokenError(f"{source}: tokens[{i}]: must be a mapping with token and team")
            token, team, admin = item.get("token"), item.get("team"), item.get("admin", False)
            if not isinstance(token, str) or not token:
                raise TokenError(f"{source}: tokens[{i}].token: must be a non-empty string")
            if not isinstance(team, str) or not team:
                raise TokenError(f"{source}: tokens[{i}].team: must be a non-empty string")
            if not isinstance(admin, bool):
                raise TokenError(f"{source}: tokens[{i}].admin: must be true or false")
            allowed = item.get("queues")
            if allowed is not None and (
                not isinstance(allowed, list) or not all(isinstance(q, str) and q for q in allowed)
            ):
                raise TokenError(f"{source}: tokens[{i}].queues: must be a list of queue names")
            queues = frozenset(allowed) if allowed is not None else None
            entries.append((token, Principal(team=team, admin=admin, queues=queues)))
        return cls(entries)
