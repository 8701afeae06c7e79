"""Every ORM model, imported in one place so that metadata is complete (Alembic, tests)."""

from app.auth.models import ApiKey, RateLimitWindow
from app.catalog.models import CatalogVersion
from app.jobs.models import IdempotencyKey, Job, JobEvent
from app.keyring.models import ServiceSecret

__all__ = [
    "ApiKey",
    "CatalogVersion",
    "IdempotencyKey",
    "Job",
    "JobEvent",
    "RateLimitWindow",
    "ServiceSecret",
]
