"""A typed Python client for poyo-relay's REST API (docs/API.md).

It needs only the standard library and httpx (and `standardwebhooks`, imported by
`verify_webhook` alone), never the server's packages::

    from poyo_relay.client import Client

    with Client("http://127.0.0.1:8000", "prk_…") as client:
        job = client.jobs.create(model="wan2.5-text-to-video", input={"prompt": "a fox"})
        job = client.jobs.wait(job.id, timeout=600)
        if job.status == "succeeded":
            print([output.url for output in job.outputs])

`AsyncClient` is the same for asyncio. Errors are `PoyoRelayError`s: `ApiError` subclasses
for the API's error answers (`NotFound`, `InvalidRequest`, `RateLimited`, …) and
`ConnectionFailed` when the service cannot be reached after the retries.
"""

from poyo_relay.client._async import AsyncClient, AsyncJobs, AsyncModels
from poyo_relay.client._sync import Client, Jobs, Models
from poyo_relay.client.errors import (
    ApiError,
    AuthenticationError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    ErrorDetail,
    InvalidRequest,
    InvalidResponse,
    NotFound,
    PermissionDenied,
    PoyoRelayError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    WebhookVerificationError,
)
from poyo_relay.client.types import (
    ArchiveState,
    ArchiveStatus,
    Estimate,
    Job,
    JobError,
    JobEvent,
    JobOutput,
    JobStatus,
    JobUpdate,
    Model,
    ProviderState,
)
from poyo_relay.client.webhooks import verify_webhook

__all__ = [
    "ApiError",
    "ArchiveState",
    "ArchiveStatus",
    "AsyncClient",
    "AsyncJobs",
    "AsyncModels",
    "AuthenticationError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ErrorDetail",
    "Estimate",
    "InvalidRequest",
    "InvalidResponse",
    "Job",
    "JobError",
    "JobEvent",
    "JobOutput",
    "JobStatus",
    "JobUpdate",
    "Jobs",
    "Model",
    "Models",
    "NotFound",
    "PermissionDenied",
    "PoyoRelayError",
    "ProviderState",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "WebhookVerificationError",
    "verify_webhook",
]
