"""job_events: NOTIFY poyo_relay_events after each insert (PostgreSQL)

Every API process LISTENs on one connection (app/streams/listener.py) and re-reads the
audit trail when told, so a change made by any process wakes the waits and streams of all
of them. The payload is the transaction's start (epoch seconds): the notification lag.
SQLite has no NOTIFY; its processes wake their own waits (app/streams/feed.py).

Revision ID: e7a4b9c1d2f3
Revises: c5d1e8f2a7b3
Create Date: 2026-11-30 18:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "e7a4b9c1d2f3"
down_revision: str | Sequence[str] | None = "c5d1e8f2a7b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION poyo_relay_notify_events() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            -- One notification per transaction: equal payloads are folded at commit.
            PERFORM pg_notify(
                'poyo_relay_events', extract(epoch FROM transaction_timestamp())::text
            );
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER job_events_notify AFTER INSERT ON job_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION poyo_relay_notify_events()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS job_events_notify ON job_events")
    op.execute("DROP FUNCTION IF EXISTS poyo_relay_notify_events()")
