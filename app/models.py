"""Every ORM model, imported in one place so that metadata is complete (Alembic, tests)."""

from app.auth.models import ApiKey, RateLimitWindow, UiSession
from app.billing.models import Budget, ProviderAccount, UsageDay
from app.catalog.models import CatalogVersion
from app.jobs.models import IdempotencyKey, Job, JobEvent
from app.keyring.models import ServiceSecret
from app.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage

__all__ = [
    "ApiKey",
    "Budget",
    "CatalogVersion",
    "IdempotencyKey",
    "Job",
    "JobEvent",
    "ProviderAccount",
    "RateLimitWindow",
    "ServiceSecret",
    "UiSession",
    "UsageDay",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookMessage",
]
