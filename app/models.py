"""Every ORM model, imported in one place so that metadata is complete (Alembic, tests)."""

from app.auth.models import ApiKey, RateLimitWindow
from app.callbacks.models import ServiceSecret
from app.jobs.models import IdempotencyKey, Job, JobEvent

__all__ = ["ApiKey", "IdempotencyKey", "Job", "JobEvent", "RateLimitWindow", "ServiceSecret"]
