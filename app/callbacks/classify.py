"""What a provider callback is, decided without I/O: its claim, whether it changes
anything, and what a batch of callbacks writes. Tested in tests/test_callback_decisions.py.

The body is a hint, never the truth: a callback that may change something only records
what it claims and makes the job due for a status check (jobs.confirmation).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from app.errors import AppError, BadRequest, NotFound, Unauthorized
from app.jobs.events import EventType, NewEvent
from app.jobs.repository import CallbackView
from app.jobs.states import TERMINAL, from_provider, provider_rank
from app.provider.schemas import ProviderStatus, unwrap

MAX_TASK_ID_CHARS = 128


class Outcome(StrEnum):
    RECEIVED = "received"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    REJECTED_BODY = "rejected_body"
    REJECTED_CREDENTIAL = "rejected_credential"
    REJECTED_SIGNATURE = "rejected_signature"
    REJECTED_TASK = "rejected_task"
    UNKNOWN_JOB = "unknown_job"


@dataclass(frozen=True)
class CallbackResult:
    """The answer owed to the provider: an outcome, and the error it is (None: 200)."""

    outcome: Outcome
    message: str
    error: type[AppError] | None = None

    @property
    def http_status(self) -> int:
        return 200 if self.error is None else self.error.status_code


RECEIVED = CallbackResult(Outcome.RECEIVED, "stored; the status will be confirmed")
UNKNOWN_JOB = CallbackResult(Outcome.UNKNOWN_JOB, "no such job", NotFound)
BAD_CREDENTIAL = CallbackResult(
    Outcome.REJECTED_CREDENTIAL, "invalid callback credential", Unauthorized
)
OTHER_TASK = CallbackResult(Outcome.REJECTED_TASK, "callback names another task", BadRequest)


def bad_body(message: str) -> CallbackResult:
    return CallbackResult(Outcome.REJECTED_BODY, message, BadRequest)


def bad_signature(problem: str) -> CallbackResult:
    return CallbackResult(Outcome.REJECTED_SIGNATURE, f"invalid signature: {problem}", Unauthorized)


@dataclass(frozen=True)
class Claim:
    """What a callback says: its task, and the status it reports (None: unknown to us,
    still worth a look at the status endpoint)."""

    task_id: str
    status: ProviderStatus | None


def parse(body: bytes) -> Claim | CallbackResult:
    """The claim of a callback body (wrapped or flat), or why it is refused."""
    try:
        payload = unwrap(orjson.loads(body))
    except orjson.JSONDecodeError:
        return bad_body("body is not JSON")
    if not isinstance(payload, dict):
        return bad_body("body is not a JSON object")
    task_id = payload.get("task_id")
    if (
        not isinstance(task_id, str)
        or not 0 < len(task_id) <= MAX_TASK_ID_CHARS
        or "\x00" in task_id
    ):
        return bad_body("body has no valid task_id")
    raw_status = payload.get("status")
    try:
        status = ProviderStatus(raw_status) if isinstance(raw_status, str) else None
    except ValueError:
        status = None
    return Claim(task_id=task_id, status=status)


def classify(job: CallbackView, claim: Claim) -> tuple[EventType, str] | None:
    """The event type and reason of a callback that changes nothing, or None if it may."""
    if job.status in TERMINAL:
        if claim.status is not None and from_provider(claim.status) is job.status:
            return EventType.CALLBACK_DUPLICATE, f"job already {job.status}"
        return EventType.CALLBACK_IGNORED, f"late: job already {job.status}"
    if claim.status is None or job.seen is None:
        return None
    seen_rank, claimed_rank = provider_rank(job.seen), provider_rank(claim.status)
    if claimed_rank == seen_rank:
        return EventType.CALLBACK_DUPLICATE, f"already received {job.seen}"
    if claimed_rank < seen_rank:
        return EventType.CALLBACK_IGNORED, f"stale: {claim.status} after {job.seen}"
    return None


@dataclass(frozen=True)
class Arrival:
    """A callback as it arrived, authenticated, parsed and its signature checked. A
    refused one (`refusal`) is still kept on the job's trail as evidence."""

    job_id: str
    body: bytes
    claim: Claim | None
    refusal: CallbackResult | None
    signed: bool


class Plan:
    """What one batch of callbacks writes: an event for every callback, and for each job
    the furthest status claimed, which makes it due for a check."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.events: list[tuple[str, NewEvent]] = []
        self.claims: dict[str, ProviderStatus | None] = {}

    def add(self, arrival: Arrival, job: CallbackView | None) -> CallbackResult:
        """Judge one callback against its job (as earlier callbacks of the batch left it)."""
        if job is None:
            return UNKNOWN_JOB
        claim = arrival.claim
        data: dict[str, Any] = {
            "task_id": claim.task_id if claim else None,
            "status": claim.status if claim else None,
            "signed": arrival.signed,
            # As text that any database can store (PostgreSQL refuses U+0000).
            "raw": arrival.body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
        }
        refusal = arrival.refusal
        if refusal is None and claim is not None and job.task_id not in (None, claim.task_id):
            refusal = OTHER_TASK
        if refusal is not None or claim is None:
            refusal = refusal or bad_body("body has no valid task_id")
            self._event(
                arrival.job_id, EventType.CALLBACK_REJECTED, data | {"reason": refusal.message}
            )
            return refusal
        verdict = classify(job, claim)
        if verdict is not None:
            event_type, reason = verdict
            self._event(arrival.job_id, event_type, data | {"reason": reason})
            outcome = Outcome(event_type.removeprefix("callback."))
            return CallbackResult(outcome, reason)
        if claim.status is not None:
            job.seen = claim.status  # later callbacks in this batch compare against it
        self.claims[arrival.job_id] = job.seen
        self._event(arrival.job_id, EventType.CALLBACK_RECEIVED, data)
        return RECEIVED

    def _event(self, job_id: str, type: EventType, data: dict[str, Any]) -> None:
        self.events.append((job_id, NewEvent(type, data)))
