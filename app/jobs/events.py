"""What can happen to a job: the types of its audit trail (`GET /v1/jobs/{id}/events`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    JOB_CREATED = "job.created"
    JOB_STATUS_CHANGED = "job.status_changed"
    # Submission: accepted, refused (4xx), failed (unreachable, 429, 5xx), sent again after
    # an attempt whose outcome is unknown, and a second task PoYo accepted for the job.
    PROVIDER_SUBMITTED = "provider.submitted"
    PROVIDER_REJECTED = "provider.rejected"
    PROVIDER_SUBMIT_FAILED = "provider.submit_failed"
    PROVIDER_RESUBMITTING = "provider.resubmitting"
    PROVIDER_DUPLICATE_TASK = "provider.duplicate_task"
    # Status checks, and a task a callback named that the status endpoint confirmed.
    PROVIDER_POLLED = "provider.polled"
    PROVIDER_POLL_FAILED = "provider.poll_failed"
    PROVIDER_TASK_LINKED = "provider.task_linked"
    # Callbacks, each with its raw body.
    CALLBACK_RECEIVED = "callback.received"
    CALLBACK_DUPLICATE = "callback.duplicate"
    CALLBACK_IGNORED = "callback.ignored"
    CALLBACK_REJECTED = "callback.rejected"
    # The client's webhook.
    WEBHOOK_DELIVERED = "webhook.delivered"
    WEBHOOK_FAILED = "webhook.failed"
    WEBHOOK_ABANDONED = "webhook.abandoned"
    # Keeping the outputs of a succeeded job (app/archive): each file kept, an attempt that
    # failed (retried), the last one (given up), and a backfill that asked again.
    OUTPUT_ARCHIVED = "output.archived"
    ARCHIVE_FAILED = "archive.failed"
    ARCHIVE_ABANDONED = "archive.abandoned"
    ARCHIVE_REQUESTED = "archive.requested"


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append to a job's trail (its data is JSON as stored)."""

    type: EventType
    data: dict[str, Any]
