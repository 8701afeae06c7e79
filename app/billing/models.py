"""What credits are spent and allowed: per owner, per day and model (kept as jobs change),
each owner's budgets, and PoYo's account balance as last read. Credits are stored in
1/1000 credit (exact sums)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.db_types import UTCDateTime


class UsageDay(Base):
    """One owner's jobs of one model created on one (UTC) day. `spent` is what budgets
    count: a job's estimate from its creation (reserved), then, once it ends, what PoYo
    charged (its estimate when PoYo did not say; 0 if it failed)."""

    __tablename__ = "usage_daily"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Jobs whose cost could not be estimated (they reserve nothing).
    unestimated_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    estimated_millicredits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    charged_millicredits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    spent_millicredits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Of `jobs`, those that ended so far, by outcome (the dashboard's jobs per status).
    succeeded_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    failed_jobs: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (Index("ix_usage_daily_day", "day"),)


class Budget(Base):
    """An owner's credit budgets (null: none for that period); a job that would take the
    owner's spend of the UTC day or month past one is refused (402) before it is sent."""

    __tablename__ = "budgets"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    daily_millicredits: Mapped[int | None] = mapped_column(BigInteger)
    monthly_millicredits: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ProviderAccount(Base):
    """PoYo's account as the worker last read it (one row, id 1)."""

    __tablename__ = "provider_account"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    balance_millicredits: Mapped[int] = mapped_column(BigInteger)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
