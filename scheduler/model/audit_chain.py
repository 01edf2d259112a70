"""The audit log's hash chain: the canonical form of a record, its hashes, and the walk that checks a
chain. Pure (hashlib and json only): the store, the API, the CLI and the tests share it, and an
auditor can redo all of it without Corral (README, "Audit": the offline recipe).

Each audit record has a sequence number `seq` (1, 2, 3, ... with no gaps) and

    canonical = JSON of the record's content: sorted keys, no whitespace, UTF-8 (not \\u-escaped),
                numbers as Python's json writes them (floats in their shortest round-trip form)
    digest    = sha256(canonical).hexdigest()
    hash      = sha256(prev_hash + "\\n" + digest).hexdigest()   (ASCII hex strings)

where `prev_hash` is the previous record's `hash`, and 64 zeros before the first record. Hashing the
digest rather than the content lets an export prove that a subset of the records sits unbroken in the
chain while showing only the digests of the records it leaves out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from scheduler.model.records import AuditRecord

__all__ = [
    "FORMAT",
    "GENESIS",
    "ChainEntry",
    "ChainError",
    "ChainVerifier",
    "canonical",
    "canonical_json",
    "content_of",
    "digest_of",
    "link",
    "parse_head",
]

FORMAT = 1  # the "v" of every canonical record; a new canonical form would be 2
GENESIS = "0" * 64  # the prev_hash of the first record


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 text (not ASCII-escaped); NaN and infinities refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_of(record: AuditRecord, seq: int) -> dict[str, Any]:
    """Everything an audit record says, as the canonical JSON object (the store's `seq` included)."""
    return {
        "v": FORMAT,
        "seq": seq,
        "time": float(record.time),
        "actor": record.actor,
        "decision": record.decision,
        "job_id": record.job_id,
        "attempt": int(record.attempt),
        "nodes": list(record.nodes),
        "node_regions": list(record.node_regions),
        "data_region": record.data_region,
        "residency_ok": bool(record.residency_ok),
        "detail": record.detail,
        "private_detail": record.private_detail,
        "related_job": record.related_job,
    }


def canonical(record: AuditRecord, seq: int) -> str:
    return canonical_json(content_of(record, seq))


def digest_of(canonical_text: str) -> str:
    return hashlib.sha256(canonical_text.encode("utf-8")).hexdigest()


def link(prev_hash: str, digest: str) -> str:
    """The hash of a record whose content digest is `digest`, following the record hashed `prev_hash`."""
    return hashlib.sha256(f"{prev_hash}\n{digest}".encode("ascii")).hexdigest()


@dataclass(frozen=True, slots=True)
class ChainEntry:
    """One record of the chain as stored: its seq, the hashes, and its canonical content."""

    seq: int
    prev_hash: str
    hash: str
    canonical: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "prev_hash": self.prev_hash, "hash": self.hash, "canonical": self.canonical}


class ChainError(Exception):
    """The first record where the chain breaks (`seq`), with a one-line reason."""

    def __init__(self, seq: int, message: str) -> None:
        super().__init__(message)
        self.seq = seq
        self.message = message


def parse_head(text: str) -> tuple[int, str]:
    """`SEQ:HASH` (what `corral audit head` prints) → (seq, hash); ValueError with a one-line reason."""
    seq_text, sep, hash_text = text.strip().partition(":")
    hash_text = hash_text.lower()
    if not sep or not seq_text.isdigit() or len(hash_text) != 64 or set(hash_text) - set("0123456789abcdef"):
        raise ValueError(f"{text[:80]!r} is not SEQ:HASH (a number, ':' and 64 hex digits)")
    return int(seq_text), hash_text


class ChainVerifier:
    """Walks a chain in seq order, record by record (`add`), and `finish`es against a head if one is
    given. Raises ChainError naming the first bad record:

    - edited:   its hash is not the hash of its own content and prev_hash (or its content names
                another seq);
    - inserted or removed: its prev_hash is not the previous record's hash, or seqs skip or repeat;
    - truncated: the chain ends before the head's seq, or the head's record has another hash.
    """

    def __init__(self, head: tuple[int, str] | None = None) -> None:
        self.head = head
        self.count = 0
        self.last_seq = 0
        self.last_hash = GENESIS

    def add(self, entry: ChainEntry) -> dict[str, Any]:
        """Check one record (the next in seq order); its content, parsed."""
        seq = entry.seq
        try:
            content = json.loads(entry.canonical)
        except ValueError:
            raise ChainError(seq, f"record {seq} was edited: its content is not JSON") from None
        if not isinstance(content, dict) or content.get("seq") != seq:
            raise ChainError(seq, f"record {seq} was edited: its content names another seq")
        if link(entry.prev_hash, digest_of(entry.canonical)) != entry.hash:
            raise ChainError(seq, f"record {seq} was edited: its hash does not match its content")
        self._link(seq, entry.prev_hash)
        if self.head is not None and seq == self.head[0] and entry.hash != self.head[1]:
            raise ChainError(seq, f"record {seq} is not the head given: the chain was rewritten up to it")
        self.count += 1
        self.last_seq = seq
        self.last_hash = entry.hash
        return content

    def _link(self, seq: int, prev_hash: str) -> None:
        if seq <= self.last_seq:
            raise ChainError(seq, f"record {seq} comes again after record {self.last_seq}: it was inserted")
        if prev_hash == self.last_hash:
            if seq != self.last_seq + 1:  # linked, yet seqs skip: renumbered
                raise ChainError(seq, f"record {seq} follows record {self.last_seq}: its seq was edited")
            return
        if seq != self.last_seq + 1:
            first, last = self.last_seq + 1, seq - 1
            missing = f"record {first}" if first == last else f"records {first}-{last}"
            before = f"record {self.last_seq}" if self.last_seq else "the start of the chain"
            raise ChainError(seq, f"record {seq} does not link to {before}: {missing} removed")
        if not self.last_seq:
            raise ChainError(seq, f"record {seq} does not link to the start of the chain (64 zeros)")
        raise ChainError(
            seq,
            f"record {seq} does not link to record {self.last_seq}: a record was inserted or removed "
            f"between them, or record {self.last_seq} was rewritten",
        )

    def add_all(self, entries: Iterable[ChainEntry]) -> None:
        for entry in entries:
            self.add(entry)

    def finish(self) -> None:
        """After the last record: ChainError if the chain ends before the head given."""
        if self.head is not None and self.head[0] > self.last_seq:
            first, last = self.last_seq + 1, self.head[0]
            missing = f"record {first}" if first == last else f"records {first}-{last}"
            raise ChainError(
                first,
                f"the chain ends at record {self.last_seq} but the head given is record {last}: "
                f"{missing} removed from its end (truncated)",
            )
