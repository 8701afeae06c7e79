"""The job state machine: pure, forward-only, no I/O.

pending → queued → running → succeeded | failed. Steps may be skipped, a status never
moves backwards, and a terminal status is final.
"""

from __future__ import annotations

from enum import StrEnum

from app.provider.schemas import ProviderStatus


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED})
ACTIVE: frozenset[JobStatus] = frozenset(set(JobStatus) - TERMINAL)
# Accepted by the provider and not finished: what status checks are for.
IN_FLIGHT: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})

_RANK = {
    JobStatus.PENDING: 0,
    JobStatus.QUEUED: 1,
    JobStatus.RUNNING: 2,
    JobStatus.SUCCEEDED: 3,
    JobStatus.FAILED: 3,
}

_FROM_PROVIDER = {
    ProviderStatus.NOT_STARTED: JobStatus.QUEUED,
    ProviderStatus.RUNNING: JobStatus.RUNNING,
    ProviderStatus.FINISHED: JobStatus.SUCCEEDED,
    ProviderStatus.FAILED: JobStatus.FAILED,
}


def is_terminal(status: JobStatus) -> bool:
    return status in TERMINAL


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    """True when moving from `current` to `target` goes strictly forward."""
    if current in TERMINAL:
        return False
    return _RANK[target] > _RANK[current]


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Every status from which `target` may be reached: the compare-and-set's allowed set."""
    return frozenset(status for status in JobStatus if can_transition(status, target))


def from_provider(status: ProviderStatus) -> JobStatus:
    return _FROM_PROVIDER[status]


def provider_rank(status: ProviderStatus) -> int:
    """How far along a provider status is; callbacks reporting less than seen are stale."""
    return _RANK[_FROM_PROVIDER[status]]


class ArchiveStatus(StrEnum):
    """Where keeping a succeeded job's outputs stands (app/archive): due, done, or given
    up after ARCHIVE_MAX_ATTEMPTS. A job's own status never depends on it."""

    PENDING = "pending"
    ARCHIVED = "archived"
    FAILED = "failed"
