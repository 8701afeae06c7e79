"""PoYo's account balance: read now and then by a worker (BALANCE_CHECK_SECONDS), kept in
`provider_account` (one row, id 1) for `poyo-relay status`, exported as the gauge
`poyo_relay_provider_balance_credits`, and a warning in the logs when it runs low.

Any number of workers may check: each read replaces an older one, never a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy import select

from app.billing.models import ProviderAccount
from app.db import Database, upsert
from app.metrics import PROVIDER_BALANCE
from app.provider.client import PoyoClient, ProviderError
from app.timeutil import utcnow

log = structlog.get_logger(__name__)

ACCOUNT_ID = 1
MILLICREDITS = 1000  # credits are stored in 1/1000 credit


@dataclass(frozen=True)
class StoredBalance:
    """The balance as last read, and when."""

    millicredits: int
    checked_at: datetime

    @property
    def credits(self) -> float:
        return self.millicredits / MILLICREDITS


async def store_balance(db: Database, balance: StoredBalance) -> None:
    """Keep `balance`, unless a read made later is already kept."""
    async with db.write() as conn:
        statement = upsert(conn, ProviderAccount).values(
            id=ACCOUNT_ID,
            balance_millicredits=balance.millicredits,
            checked_at=balance.checked_at,
        )
        table = ProviderAccount.__table__.c
        await conn.execute(
            statement.on_conflict_do_update(
                index_elements=["id"],
                set_={
                    "balance_millicredits": statement.excluded.balance_millicredits,
                    "checked_at": statement.excluded.checked_at,
                },
                where=table.checked_at <= statement.excluded.checked_at,
            )
        )


async def last_balance(db: Database) -> StoredBalance | None:
    """The balance as a worker last read it; None if none ever did."""
    async with db.read() as session:
        row = (
            await session.execute(
                select(ProviderAccount.balance_millicredits, ProviderAccount.checked_at).where(
                    ProviderAccount.id == ACCOUNT_ID
                )
            )
        ).one_or_none()
    return None if row is None else StoredBalance(int(row[0]), row[1])


class BalanceCheck:
    """One read of PoYo's balance: `run_once()` is the production body (the worker runs it
    every BALANCE_CHECK_SECONDS) and what tests drive."""

    def __init__(self, *, db: Database, provider: PoyoClient, warn_below_credits: float) -> None:
        self.db = db
        self.provider = provider
        self.warn_below_credits = warn_below_credits

    async def run_once(self) -> StoredBalance | None:
        """Read, publish and keep the balance; None when PoYo could not tell (logged, and
        counted in `poyo_relay_provider_errors_total{endpoint="balance"}`: the next check
        tries again). A database failure is raised."""
        try:
            credits = await self.provider.balance()
        except ProviderError as exc:
            log.warning(
                "provider_balance_check_failed",
                error=exc.message,
                error_kind=exc.kind,
                http_status=exc.http_status,
            )
            return None
        balance = StoredBalance(round(credits * MILLICREDITS), utcnow())
        PROVIDER_BALANCE.set(balance.credits)
        if balance.credits < self.warn_below_credits:
            log.warning(
                "provider_balance_low",
                balance_credits=balance.credits,
                threshold_credits=self.warn_below_credits,
            )
        else:
            log.info("provider_balance_checked", balance_credits=balance.credits)
        await store_balance(self.db, balance)
        return balance
