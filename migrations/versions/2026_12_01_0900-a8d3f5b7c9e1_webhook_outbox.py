"""webhooks: endpoints, and an outbox of messages, deliveries and attempts

Revision ID: a8d3f5b7c9e1
Revises: f1c2d3e4a5b6
Create Date: 2026-12-01 09:00:00+00:00

Jobs no longer carry their webhook's bookkeeping (`webhook_attempts`, and `next_check_at` on
ended jobs): a job that ended still owing its webhook_url a message gets that message in the
outbox here, with the job as it is now.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import sqlalchemy as sa
from alembic import op

from app.db_types import JSONType, UTCDateTime

revision: str = "a8d3f5b7c9e1"
down_revision: str | Sequence[str] | None = "f1c2d3e4a5b6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("event_types", JSONType, nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=300), nullable=True),
        sa.Column("secret_generation", sa.Integer(), server_default="1", nullable=False),
        sa.Column("previous_secret_until", UTCDateTime(), nullable=True),
        sa.Column("failing_since", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
    )
    op.create_index("ix_webhook_endpoints_owner", "webhook_endpoints", ["owner", "id"])
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_webhook_messages_job_id_jobs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_messages"),
    )
    op.create_index("ix_webhook_messages_job_id", "webhook_messages", ["job_id", "created_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=True),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
        sa.Column("manual", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["webhook_messages.id"],
            name="fk_webhook_deliveries_message_id_webhook_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name="fk_webhook_deliveries_endpoint_id_webhook_endpoints",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["state", "next_attempt_at"])
    op.create_index(
        "ix_webhook_deliveries_order", "webhook_deliveries", ["job_id", "endpoint_id", "id"]
    )
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "state"])
    op.create_index("ix_webhook_deliveries_message_id", "webhook_deliveries", ["message_id"])
    op.create_index("ix_webhook_deliveries_lease", "webhook_deliveries", ["lease_expires_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("delivery_id", ROW_ID, nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), nullable=True),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=300), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name="fk_webhook_attempts_delivery_id_webhook_deliveries",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
    )
    op.create_index("ix_webhook_attempts_endpoint", "webhook_attempts", ["endpoint_id", "id"])
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])
    op.create_index("ix_webhook_attempts_created_at", "webhook_attempts", ["created_at"])
    _move_owed_webhooks()
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("webhook_attempts")


def _move_owed_webhooks() -> None:
    """Ended jobs still owing their webhook_url (due, not delivered or given up yet) get
    their message in the outbox, the job as it is now for its body."""
    import orjson

    from app.ids import new_message_id
    from app.jobs.schemas import job_to_dict
    from app.timeutil import utcnow

    bind = op.get_bind()
    jobs = sa.table(
        "jobs",
        *(sa.column(name) for name in _PLAIN_COLUMNS),
        *(sa.column(name, JSONType) for name in ("input", "metadata", "outputs", "error")),
        *(sa.column(name, UTCDateTime()) for name in _TIME_COLUMNS),
    )
    owed = bind.execute(
        sa.select(jobs).where(
            jobs.c.webhook_url.is_not(None),
            jobs.c.next_check_at.is_not(None),
            jobs.c.status.in_(["succeeded", "failed"]),
        )
    ).mappings()
    messages = sa.table(
        "webhook_messages",
        *(sa.column(name) for name in ("id", "owner", "job_id", "event_type", "payload")),
        sa.column("created_at", UTCDateTime()),
    )
    deliveries = sa.table(
        "webhook_deliveries",
        *(sa.column(name) for name in ("message_id", "url", "job_id", "state", "attempts")),
        sa.column("manual", sa.Boolean()),
        *(sa.column(name, UTCDateTime()) for name in ("next_attempt_at", "created_at", "updated_at")),
    )
    now = utcnow()
    for row in list(owed):
        job = SimpleNamespace(**{("metadata_" if k == "metadata" else k): v for k, v in row.items()})
        event_type = f"job.{job.status}"
        body = {"type": event_type, "timestamp": now.isoformat(), "data": job_to_dict(job)}  # type: ignore[arg-type]
        message_id = new_message_id()
        bind.execute(
            messages.insert().values(
                id=message_id,
                owner=job.owner,
                job_id=job.id,
                event_type=event_type,
                payload=orjson.dumps(body).decode(),
                created_at=now,
            )
        )
        bind.execute(
            deliveries.insert().values(
                message_id=message_id,
                url=job.webhook_url,
                job_id=job.id,
                state="pending",
                attempts=0,
                manual=False,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )


# The jobs columns the body is made of, as they are at this revision.
_PLAIN_COLUMNS = (
    "id",
    "owner",
    "model",
    "catalog_version",
    "status",
    "webhook_url",
    "provider_task_id",
    "provider_status",
    "progress",
    "archive_status",
    "archive_attempts",
    "archive_error",
    "cost_estimate_millicredits",
    "cost_estimate_note",
    "cost_charged_millicredits",
)
_TIME_COLUMNS = ("created_at", "updated_at", "submitted_at", "completed_at", "next_check_at")


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("webhook_attempts", sa.Integer(), server_default="0", nullable=False)
        )
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_messages")
    op.drop_table("webhook_endpoints")
