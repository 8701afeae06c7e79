"""Create, list, revoke and check API keys.

A key reads `prk_<key id>_<secret>`: the id finds the row, and the SHA-256 of the secret
is compared in constant time. The secret (32 random bytes) is shown once and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, or_, select, update

from app.auth.models import ApiKey, Caller
from app.db import Database
from app.ids import KEY_PREFIX, new_key_id
from app.timeutil import utcnow

TOKEN_PREFIX = "prk_"  # noqa: S105 - a prefix, not a secret
_TOKEN = re.compile(r"^prk_([0-9a-z]{26})_([A-Za-z0-9_-]{43,86})$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEYS = ApiKey.__table__.c
# Built once: every authenticated request runs it.
_KEY_BY_ID = select(_KEYS.name, _KEYS.secret_hash, _KEYS.is_admin, _KEYS.revoked_at).where(
    _KEYS.id == bindparam("key_id")
)
# Compared against when the key id is unknown, so both paths cost the same.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    is_admin: bool
    created_at: datetime
    revoked_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(key: ApiKey) -> KeyInfo:
    return KeyInfo(key.id, key.name, key.is_admin, key.created_at, key.revoked_at)


async def create_key(db: Database, *, name: str, is_admin: bool = False) -> tuple[KeyInfo, str]:
    """A new key for owner `name`; returns its info and the token, which is shown once."""
    if not NAME_PATTERN.match(name):
        raise ValueError("a key name is 1-64 letters, digits, '.', '_' or '-'")
    key_id = new_key_id()
    secret = secrets.token_urlsafe(32)
    info = KeyInfo(key_id, name, is_admin, created_at=utcnow(), revoked_at=None)
    async with db.write() as conn:
        await conn.execute(
            insert(ApiKey).values(
                id=info.id,
                name=info.name,
                secret_hash=_hash(secret),
                is_admin=info.is_admin,
                created_at=info.created_at,
            )
        )
    token = f"{TOKEN_PREFIX}{key_id.removeprefix(KEY_PREFIX)}_{secret}"
    return info, token


async def list_keys(db: Database) -> list[KeyInfo]:
    async with db.read() as session:
        keys = (await session.execute(select(ApiKey).order_by(ApiKey.created_at))).scalars()
        return [_info(key) for key in keys]


async def revoke(db: Database, *, name_or_id: str) -> int:
    """Revoke the key with this id, or every key with this name; how many were revoked."""
    async with db.write() as conn:
        result = await conn.execute(
            update(ApiKey)
            .where(
                or_(ApiKey.id == name_or_id, ApiKey.name == name_or_id), ApiKey.revoked_at.is_(None)
            )
            .values(revoked_at=utcnow())
        )
        return int(result.rowcount)


async def authenticate(db: Database, token: str) -> Caller | None:
    """The caller a bearer token stands for, or None if it is not a live key."""
    match = _TOKEN.match(token)
    if match is None:
        return None
    key_id, secret = KEY_PREFIX + match.group(1), match.group(2)
    async with db.read_connection() as conn:
        key = (await conn.execute(_KEY_BY_ID, {"key_id": key_id})).first()
    stored = key.secret_hash if key is not None else _DUMMY_HASH
    valid = hmac.compare_digest(stored.encode(), _hash(secret).encode())
    if key is None or not valid or key.revoked_at is not None:
        return None
    return Caller(owner=key.name, key_id=key_id, is_admin=key.is_admin)
