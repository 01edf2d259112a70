"""The tables, as SQLAlchemy Core metadata. Migrations (migrations/versions) create exactly this;
tests/store/test_schema.py checks that the two never drift apart."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# SQLite only autoincrements (never reusing ids) an `INTEGER PRIMARY KEY`; PostgreSQL gets 64 bits.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# PostgreSQL only: the values of jobs.change_seq (SQLite computes max + 1 under its write lock).
CHANGE_SEQ = sa.Sequence("jobs_change_seq")

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("team", sa.String(128), nullable=False),
    sa.Column("queue", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("priority", sa.String(64), nullable=False),
    sa.Column("spec", JSON, nullable=False),
    sa.Column("submitted_at", sa.Float(), nullable=False),
    sa.Column("started_at", sa.Float(), nullable=True),
    sa.Column("first_started_at", sa.Float(), nullable=True),
    sa.Column("finished_at", sa.Float(), nullable=True),
    sa.Column("restart_count", sa.Integer(), nullable=False),
    sa.Column("preemption_count", sa.Integer(), nullable=False),
    sa.Column("attained_gpu_s", sa.Float(), nullable=False),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("allocation", JSON, nullable=True),
    sa.Column("pending_reason", sa.Text(), nullable=True),
    sa.Column("stop_reason", sa.String(16), nullable=True),
    sa.Column("stop_requested_at", sa.Float(), nullable=True),
    sa.Column("cancel_requested_at", sa.Float(), nullable=True),
    sa.Column("cancel_grace_s", sa.Float(), nullable=True),
    sa.Column("idempotency_key", sa.String(128), nullable=True),
    sa.Column("change_seq", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", sa.Float(), nullable=False),
    # Failed starts of the current run of failures (transient backend errors) and when the job may be
    # placed again (exponential backoff); reset when a start succeeds.
    sa.Column("start_failures", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("retry_at", sa.Float(), nullable=True),
    # A task of a job array: the array's id (its first task's id) and the task's index. Written once,
    # by the transaction that creates the whole array.
    sa.Column("array_id", sa.BigInteger(), nullable=True),
    sa.Column("array_index", sa.Integer(), nullable=True),
    sa.UniqueConstraint("team", "idempotency_key", name="uq_jobs_team_idempotency_key"),
    sa.Index("ix_jobs_state", "state"),
    sa.Index("ix_jobs_team", "team"),
    sa.Index("ix_jobs_change_seq", "change_seq", unique=True),
    sa.Index("ix_jobs_array_id", "array_id", "array_index"),
    sqlite_autoincrement=True,
)

# Who holds which GPU, one row per GPU. The primary key (node, gpu) is the UNIQUE(node, gpu) that makes
# the database itself refuse to give a GPU to two jobs (invariant 1).
allocations = sa.Table(
    "allocations",
    metadata,
    sa.Column("node", sa.String(256), nullable=False),
    sa.Column("gpu", sa.Integer(), nullable=False),
    sa.Column("job_id", ID, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint("node", "gpu", name="pk_allocations"),
    sa.Index("ix_allocations_job_id", "job_id"),
)

# Events and audit keep job ids as text without a foreign key: history must never make a write fail.
events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", ID, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("time", sa.Float(), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("message", sa.Text(), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("node", sa.String(256), nullable=False),
    # What only an admin (or the team of `related_job`) may read: the other job's id and queue.
    sa.Column("private_detail", sa.Text(), nullable=False, server_default=""),
    sa.Column("related_job", sa.String(32), nullable=False, server_default=""),
    sa.Index("ix_events_job_id", "job_id", "seq"),
    sqlite_autoincrement=True,
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("seq", ID, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float(), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("decision", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("nodes", JSON, nullable=False),
    sa.Column("node_regions", JSON, nullable=False),
    sa.Column("data_region", sa.String(64), nullable=False),
    sa.Column("residency_ok", sa.Boolean(), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("private_detail", sa.Text(), nullable=False, server_default=""),
    sa.Column("related_job", sa.String(32), nullable=False, server_default=""),
    # Who (the controller, or a token), and the hash chain (scheduler/model/audit_chain.py): each
    # row's hash covers its content and the previous row's hash. Rows are appended with an explicit
    # seq (last + 1) under the audit lock (scheduler/store/audit_log.py).
    sa.Column("actor", sa.String(256), nullable=False, server_default="controller"),
    sa.Column("prev_hash", sa.String(64), nullable=False, server_default=""),
    sa.Column("hash", sa.String(64), nullable=False, server_default=""),
    sa.Index("ix_audit_job_id", "job_id", "seq"),
    sa.Index("ix_audit_decision", "decision", "seq"),
    sqlite_autoincrement=True,
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("spec", JSON, nullable=False),
)

# Fair share survives restarts: each queue's decayed GPU-seconds `value` as of `at`, and the GPUs it
# held from then on (jobs keep running while a controller restarts, so they keep counting). The
# controller writes a queue's row in the step that changes what it holds and reads them back at start.
queue_usage = sa.Table(
    "queue_usage",
    metadata,
    sa.Column("queue", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float(), nullable=False),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("gpus", sa.Integer(), nullable=False),
)

# Nodes taken out of scheduling (Node.state = draining): by the controller after repeated failed
# starts, or by an admin. Running jobs stay; nothing new is placed there until uncordoned.
node_cordons = sa.Table(
    "node_cordons",
    metadata,
    sa.Column("node", sa.String(256), primary_key=True),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("by", sa.String(128), nullable=False),
)

# Leader election: one row per lease. `epoch` grows by one at every change of holder (the fencing
# token); `expires_at` is the database's clock (every replica reads one clock, skew-free).
controller_lease = sa.Table(
    "controller_lease",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(256), nullable=False),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("expires_at", sa.Float(), nullable=False),
    sa.Column("acquired_at", sa.Float(), nullable=False),
    sa.Column("api_url", sa.Text(), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
)

# The leader's latest ClusterView (JSON), so followers answer `queues`, `nodes` and positions.
controller_view = sa.Table(
    "controller_view",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.BigInteger(), nullable=False),
    sa.Column("at", sa.Float(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
)

# API tokens: only the SHA-256 digest of a token is kept (the token itself is shown once, at
# creation); `prefix` is a short, non-secret start of it so people can tell their tokens apart.
# Limits: queues (null = every queue), the highest priority class (null = any), whether jobs may be
# protected from preemption beyond the policy's default, and GPUs per job (null = no cap).
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("team", sa.String(128), nullable=False),
    sa.Column("admin", sa.Boolean(), nullable=False),
    sa.Column("queues", JSON, nullable=True),
    sa.Column("max_priority", sa.String(64), nullable=True),
    sa.Column("allow_protection", sa.Boolean(), nullable=False),
    sa.Column("max_gpus_per_job", sa.Integer(), nullable=True),
    sa.Column("created_at", sa.Float(), nullable=False),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("revoked_at", sa.Float(), nullable=True),
    sa.UniqueConstraint("digest", name="uq_tokens_digest"),
    sqlite_autoincrement=True,
)
