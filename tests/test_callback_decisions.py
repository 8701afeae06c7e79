"""What a provider callback is, decided without I/O (app/callbacks/classify.py): its claim,
whether it may change anything, and what a batch of callbacks writes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from app.callbacks.classify import (
    OTHER_TASK,
    RECEIVED,
    UNKNOWN_JOB,
    Arrival,
    CallbackResult,
    Claim,
    Outcome,
    Plan,
    bad_signature,
    classify,
    parse,
)
from app.errors import BadRequest, NotFound, Unauthorized
from app.jobs.events import EventType
from app.jobs.repository import CallbackView
from app.jobs.states import TERMINAL, JobStatus
from app.provider.schemas import ProviderStatus

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
ACTIVE = [s for s in JobStatus if s not in TERMINAL]


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


# ---- parse -----------------------------------------------------------------------------


def test_wrapped_and_flat_bodies_make_the_same_claim() -> None:
    flat = parse(body(task_id="task-1", status="finished"))
    wrapped = parse(body(code=200, data={"task_id": "task-1", "status": "finished"}))
    assert flat == wrapped == Claim("task-1", ProviderStatus.FINISHED)


def test_an_unknown_status_is_still_a_claim_worth_checking() -> None:
    assert parse(body(task_id="task-1", status="exploded")) == Claim("task-1", None)
    assert parse(body(task_id="task-1")) == Claim("task-1", None)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (body(status="finished"), "body has no valid task_id"),
        (body(task_id=""), "body has no valid task_id"),
        (body(task_id=7), "body has no valid task_id"),
        (body(task_id="x" * 129), "body has no valid task_id"),
        (body(task_id="a\x00b"), "body has no valid task_id"),
    ],
)
def test_bodies_without_a_usable_claim_are_refused(raw: bytes, message: str) -> None:
    refused = parse(raw)
    assert isinstance(refused, CallbackResult)
    assert (refused.outcome, refused.message, refused.http_status) == (
        Outcome.REJECTED_BODY,
        message,
        400,
    )


# ---- classify ----------------------------------------------------------------------------


@pytest.mark.parametrize("ended", sorted(TERMINAL))
@pytest.mark.parametrize("claimed", [*ProviderStatus, None])
def test_a_callback_for_an_ended_job_changes_nothing(
    ended: JobStatus, claimed: ProviderStatus | None
) -> None:
    verdict = classify(CallbackView(ended, "task-1", None), Claim("task-1", claimed))
    assert verdict is not None
    reports_it = {
        JobStatus.SUCCEEDED: ProviderStatus.FINISHED,
        JobStatus.FAILED: ProviderStatus.FAILED,
    }
    same = claimed is reports_it[ended]
    assert verdict[0] is (EventType.CALLBACK_DUPLICATE if same else EventType.CALLBACK_IGNORED)


@pytest.mark.parametrize("status", ACTIVE)
@pytest.mark.parametrize("seen", list(ProviderStatus))
@pytest.mark.parametrize("claimed", list(ProviderStatus))
def test_an_active_job_hears_only_news(
    status: JobStatus, seen: ProviderStatus, claimed: ProviderStatus
) -> None:
    order = list(ProviderStatus)
    rank = {s: min(order.index(s), 2) for s in order}  # finished and failed rank alike
    verdict = classify(CallbackView(status, "task-1", seen), Claim("task-1", claimed))
    if rank[claimed] > rank[seen]:
        assert verdict is None
    elif rank[claimed] == rank[seen]:
        assert verdict is not None
        assert verdict[0] is EventType.CALLBACK_DUPLICATE
    else:
        assert verdict is not None
        assert verdict[0] is EventType.CALLBACK_IGNORED


@pytest.mark.parametrize("status", ACTIVE)
def test_the_first_claim_and_a_claim_without_status_may_change_things(status: JobStatus) -> None:
    assert classify(CallbackView(status, None, None), Claim("t", ProviderStatus.RUNNING)) is None
    assert classify(CallbackView(status, "t", ProviderStatus.RUNNING), Claim("t", None)) is None


# ---- a batch -------------------------------------------------------------------------------


def arrival(job_id: str, status: str = "finished") -> Arrival:
    raw = body(task_id="task-1", status=status)
    claim = parse(raw)
    assert isinstance(claim, Claim)
    return Arrival(job_id, raw, claim, None, signed=False)


def test_a_batch_records_every_callback_and_one_claim_per_job() -> None:
    plan = Plan(NOW)
    job = CallbackView(JobStatus.QUEUED, "task-1", None)
    results = [
        plan.add(arrival("job_a", "running"), job),
        plan.add(arrival("job_a", "finished"), job),
        plan.add(arrival("job_a", "finished"), job),  # a duplicate within the batch
        plan.add(arrival("job_a", "running"), job),  # stale after finished
        plan.add(arrival("job_b"), None),
    ]
    assert [r.outcome for r in results] == [
        Outcome.RECEIVED,
        Outcome.RECEIVED,
        Outcome.DUPLICATE,
        Outcome.IGNORED,
        Outcome.UNKNOWN_JOB,
    ]
    assert results[-1] is UNKNOWN_JOB
    assert UNKNOWN_JOB.error is NotFound
    assert plan.claims == {"job_a": ProviderStatus.FINISHED}
    types = [event.type for job_id, event in plan.events if job_id == "job_a"]
    assert types == [
        EventType.CALLBACK_RECEIVED,
        EventType.CALLBACK_RECEIVED,
        EventType.CALLBACK_DUPLICATE,
        EventType.CALLBACK_IGNORED,
    ]
    assert all(job_id == "job_a" for job_id, _ in plan.events), "nothing kept for no job"


def test_events_keep_the_raw_body_printable() -> None:
    plan = Plan(NOW)
    raw = b'{"task_id": "task-1", "status": "running", "note": "\\u0000"}'
    claim = parse(raw)
    assert isinstance(claim, Claim)
    plan.add(Arrival("job_a", raw + b"\x00\xff", claim, None, signed=True), None)
    plan.add(
        Arrival("job_a", raw + b"\x00\xff", claim, None, signed=True),
        CallbackView(JobStatus.QUEUED, "task-1", None),
    )
    [(_, event)] = plan.events
    assert "\x00" not in event.data["raw"]
    assert event.data["signed"] is True
    assert event.data["status"] == "running"


def test_a_callback_naming_another_task_is_refused_and_kept_as_evidence() -> None:
    plan = Plan(NOW)
    result = plan.add(arrival("job_a"), CallbackView(JobStatus.RUNNING, "task-other", None))
    assert result is OTHER_TASK
    assert result.http_status == 400
    assert result.error is BadRequest
    [(_, event)] = plan.events
    assert event.type is EventType.CALLBACK_REJECTED
    assert event.data["reason"] == "callback names another task"
    assert plan.claims == {}


def test_a_refused_signature_is_kept_as_evidence_and_claims_nothing() -> None:
    plan = Plan(NOW)
    refused = bad_signature("signature mismatch")
    claim = Claim("task-1", ProviderStatus.FINISHED)
    result = plan.add(
        Arrival("job_a", b"{}", claim, refused, signed=True),
        CallbackView(JobStatus.RUNNING, "task-1", None),
    )
    assert result is refused
    assert result.error is Unauthorized
    [(_, event)] = plan.events
    assert event.type is EventType.CALLBACK_REJECTED
    assert plan.claims == {}


def test_a_task_first_named_by_a_callback_is_claimed() -> None:
    plan = Plan(NOW)
    assert plan.add(arrival("job_a"), CallbackView(JobStatus.PENDING, None, None)) is RECEIVED
    assert plan.claims == {"job_a": ProviderStatus.FINISHED}
