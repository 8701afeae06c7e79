"""A per-key limit on job creation, counted in the database so every replica agrees."""

from __future__ import annotations

import math
import time

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncConnection

from app.auth.models import RateLimitWindow
from app.db import upsert
from app.errors import RateLimited

WINDOW_SECONDS = 60


async def charge(conn: AsyncConnection, *, key_id: str, limit: int) -> None:
    """Count one job creation for `key_id`; 429 with Retry-After once over `limit` a minute.

    Runs in the caller's transaction, so a refused creation is not counted and a counted
    one is committed together with its job.
    """
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
    statement = (
        upsert(conn, RateLimitWindow)
        .values(key_id=key_id, window_start=window, count=1)
        .on_conflict_do_update(
            index_elements=["key_id", "window_start"],
            set_={"count": RateLimitWindow.count + 1},
        )
        .returning(RateLimitWindow.count)
    )
    count = (await conn.execute(statement)).scalar_one()
    if count == 1:
        await conn.execute(
            delete(RateLimitWindow).where(
                RateLimitWindow.key_id == key_id, RateLimitWindow.window_start < window
            )
        )
    if count > limit:
        retry_after = max(1, math.ceil(window + WINDOW_SECONDS - now))
        raise RateLimited(
            f"rate limit of {limit} jobs per minute exceeded", retry_after=retry_after
        )
