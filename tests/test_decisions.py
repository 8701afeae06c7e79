"""The worker's pure decisions (app/jobs/decisions.py), without a database or a provider:
what a confirmed provider answer changes, the next step of a pending job, and when a
failed submission is tried again."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.backoff import Backoff
from app.jobs.decisions import Policy, Submit, confirm
from app.jobs.models import Job, provider_output
from app.jobs.states import ArchiveStatus, JobStatus, can_transition, from_provider
from app.provider.schemas import ProviderStatus, TaskStatus

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SUBMITTED = NOW - timedelta(minutes=3)
POLICY = Policy(
    retry=Backoff(base_seconds=2, max_seconds=600),
    reconcile_after=timedelta(seconds=300),
    deadline=timedelta(hours=6),
    uncertain_grace=timedelta(seconds=300),
    submit_max_attempts=8,
)
FILE = {"file_url": "https://cdn.example.com/out.mp4", "file_type": "video"}


def job(**columns: Any) -> Job:
    values: dict[str, Any] = {
        "id": "job_01jcz3q9m4b8x2v7k5n0r6t1yw",
        "owner": "tenant-a",
        "model": "wan2.5-text-to-video",
        "status": JobStatus.QUEUED,
        "provider_task_id": "task-1",
        "provider_status": ProviderStatus.NOT_STARTED,
        "callback_status": None,
        "progress": 0,
        "outputs": None,
        "error": None,
        "created_at": SUBMITTED,
        "updated_at": SUBMITTED,
        "submitted_at": SUBMITTED,
        "submit_attempts": 1,
        "poll_attempts": 0,
        "submit_started_at": None,
        "webhook_url": None,
    }
    values.update(columns)
    return Job(**values)


def answer(status: ProviderStatus, **fields: Any) -> TaskStatus:
    return TaskStatus.model_validate({"task_id": "task-1", "status": status, **fields})


# ---- confirm: a confirmed answer, for every pair of current status and provider status ----


@pytest.mark.parametrize("current", list(JobStatus))
@pytest.mark.parametrize("reported", list(ProviderStatus))
def test_confirm_targets_the_providers_status_and_shows_only_news(
    current: JobStatus, reported: ProviderStatus
) -> None:
    files = [FILE] if reported is ProviderStatus.FINISHED else []
    confirmed = confirm(POLICY, job(status=current), answer(reported, files=files), NOW)
    assert confirmed.target is from_provider(reported)
    behind = can_transition(confirmed.target, current)  # the answer is older than the job
    assert ("provider_status" in confirmed.patch) is not behind
    assert confirmed.patch["poll_attempts"] == 0
    assert confirmed.patch["checked_at"] == NOW


def test_finished_with_files_succeeds_with_its_outputs() -> None:
    confirmed = confirm(POLICY, job(), answer(ProviderStatus.FINISHED, files=[FILE]), NOW)
    assert confirmed.target is JobStatus.SUCCEEDED
    assert confirmed.patch["outputs"] == [provider_output(FILE["file_url"], "video")]
    assert confirmed.patch["outputs"][0]["provider_url"] == FILE["file_url"]
    assert confirmed.patch["outputs"][0]["archived_at"] is None
    assert confirmed.patch["progress"] == 100
    assert confirmed.patch["provider_status"] is ProviderStatus.FINISHED
    assert confirmed.patch["updated_at"] == NOW
    assert "archive_status" not in confirmed.patch  # archiving is off in this policy


def test_success_makes_the_archive_due_when_archiving_is_on() -> None:
    policy = dataclasses.replace(POLICY, archive_outputs=True)
    confirmed = confirm(policy, job(), answer(ProviderStatus.FINISHED, files=[FILE]), NOW)
    assert confirmed.patch["archive_status"] is ArchiveStatus.PENDING
    assert confirmed.patch["archive_due_at"] == NOW
    running = confirm(policy, job(), answer(ProviderStatus.RUNNING, progress=40), NOW)
    assert "archive_status" not in running.patch


def test_finished_without_files_is_only_running() -> None:
    confirmed = confirm(POLICY, job(), answer(ProviderStatus.FINISHED, files=[]), NOW)
    assert confirmed.target is JobStatus.RUNNING
    assert "outputs" not in confirmed.patch


def test_file_types_are_kept_as_given() -> None:
    files = [
        {"file_url": FILE["file_url"], "file_type": "3d"},
        {"file_url": FILE["file_url"], "file_type": "hologram"},
        {"file_url": FILE["file_url"]},
    ]
    confirmed = confirm(POLICY, job(), answer(ProviderStatus.FINISHED, files=files), NOW)
    types = [output["type"] for output in confirmed.patch["outputs"]]
    assert types == ["3d", "hologram", None]


def test_failed_carries_the_providers_message_cut_to_500_characters() -> None:
    reported = answer(ProviderStatus.FAILED, error_message="x" * 900)
    confirmed = confirm(POLICY, job(status=JobStatus.RUNNING), reported, NOW)
    assert confirmed.target is JobStatus.FAILED
    assert confirmed.patch["error"] == {"code": "provider_failed", "message": "x" * 500}


def test_failed_without_a_message_says_so() -> None:
    confirmed = confirm(POLICY, job(), answer(ProviderStatus.FAILED), NOW)
    assert confirmed.patch["error"]["message"] == "the provider reported a failure"


def test_progress_only_grows() -> None:
    running = job(status=JobStatus.RUNNING, progress=60, provider_status=ProviderStatus.RUNNING)
    lower = confirm(POLICY, running, answer(ProviderStatus.RUNNING, progress=40), NOW)
    assert "progress" not in lower.patch
    assert "updated_at" not in lower.patch, "nothing visible changed"
    higher = confirm(POLICY, running, answer(ProviderStatus.RUNNING, progress=80), NOW)
    assert higher.patch["progress"] == 80
    assert higher.patch["updated_at"] == NOW


def test_a_stale_answer_changes_nothing_visible() -> None:
    running = job(status=JobStatus.RUNNING, progress=60, provider_status=ProviderStatus.RUNNING)
    stale = confirm(POLICY, running, answer(ProviderStatus.NOT_STARTED, progress=0), NOW)
    assert stale.target is JobStatus.QUEUED
    assert set(stale.patch) == {"poll_attempts", "checked_at"}


def test_a_task_named_by_a_callback_is_linked_once_confirmed() -> None:
    pending = job(status=JobStatus.PENDING, provider_task_id=None, submitted_at=None)
    confirmed = confirm(POLICY, pending, answer(ProviderStatus.RUNNING, progress=10), NOW)
    assert confirmed.target is JobStatus.RUNNING
    assert confirmed.patch["provider_task_id"] == "task-1"
    assert confirmed.patch["submitted_at"] == NOW
    assert confirmed.patch["submit_started_at"] is None


def test_next_check_is_after_reconcile_and_by_the_deadline() -> None:
    confirmed = confirm(POLICY, job(), answer(ProviderStatus.RUNNING), NOW)
    assert confirmed.next_check == NOW + POLICY.reconcile_after
    nearly_due = job(submitted_at=NOW - POLICY.deadline + timedelta(seconds=10))
    late = confirm(POLICY, nearly_due, answer(ProviderStatus.RUNNING), NOW)
    assert late.next_check == NOW + timedelta(seconds=10)


def test_a_claim_beyond_the_providers_answer_is_forgotten_and_rechecked_soon() -> None:
    claimed = job(callback_status=ProviderStatus.FINISHED, poll_attempts=2)
    confirmed = confirm(POLICY, claimed, answer(ProviderStatus.RUNNING), NOW)
    assert confirmed.patch["callback_status"] is ProviderStatus.RUNNING
    assert confirmed.patch["poll_attempts"] == 3
    ceiling = POLICY.retry.base_seconds * 2**2
    assert NOW + timedelta(seconds=ceiling / 2) <= confirmed.next_check
    assert confirmed.next_check <= NOW + timedelta(seconds=ceiling)


def test_a_claim_the_provider_confirms_is_kept() -> None:
    claimed = job(callback_status=ProviderStatus.FINISHED)
    confirmed = confirm(POLICY, claimed, answer(ProviderStatus.FINISHED, files=[FILE]), NOW)
    assert "callback_status" not in confirmed.patch
    assert confirmed.patch["poll_attempts"] == 0


# ---- the next step of a pending job ---------------------------------------------------


@pytest.mark.parametrize("status", [s for s in JobStatus if s is not JobStatus.PENDING])
def test_a_job_no_longer_pending_is_left_alone(status: JobStatus) -> None:
    assert POLICY.next_submit_step(job(status=status), NOW) == (Submit.LEAVE, None)


def test_a_callback_for_a_pending_job_is_linked_not_resubmitted() -> None:
    pending = job(
        status=JobStatus.PENDING, provider_task_id=None, callback_status=ProviderStatus.RUNNING
    )
    assert POLICY.next_submit_step(pending, NOW) == (Submit.LINK, None)


def test_an_attempt_of_unknown_outcome_waits_out_the_grace() -> None:
    started = NOW - timedelta(seconds=100)
    pending = job(status=JobStatus.PENDING, provider_task_id=None, submit_started_at=started)
    assert POLICY.next_submit_step(pending, NOW) == (Submit.WAIT, started + POLICY.uncertain_grace)
    after = POLICY.next_submit_step(pending, started + POLICY.uncertain_grace)
    assert after == (Submit.SEND, None)


def test_out_of_attempts_gives_up_and_otherwise_sends() -> None:
    tired = job(status=JobStatus.PENDING, provider_task_id=None, submit_attempts=8)
    assert POLICY.next_submit_step(tired, NOW) == (Submit.GIVE_UP, None)
    fresh = job(status=JobStatus.PENDING, provider_task_id=None, submit_attempts=7)
    assert POLICY.next_submit_step(fresh, NOW) == (Submit.SEND, None)


# ---- after a failed submission ---------------------------------------------------------


def test_a_known_failure_backs_off_exponentially_honouring_retry_after() -> None:
    for attempt in range(1, 8):
        retry_at = POLICY.after_submit_failure(
            attempt=attempt, ambiguous=False, retry_after=None, now=NOW
        )
        assert retry_at is not None
        ceiling = min(600, 2 * 2 ** (attempt - 1))
        assert NOW + timedelta(seconds=ceiling / 2) <= retry_at <= NOW + timedelta(seconds=ceiling)
    honoured = POLICY.after_submit_failure(attempt=1, ambiguous=False, retry_after=120, now=NOW)
    assert honoured == NOW + timedelta(seconds=120)


def test_the_last_known_failure_gives_up() -> None:
    assert (
        POLICY.after_submit_failure(attempt=8, ambiguous=False, retry_after=None, now=NOW) is None
    )


def test_an_unknown_outcome_waits_for_its_callback_even_on_the_last_attempt() -> None:
    for attempt in (1, 8):
        retry_at = POLICY.after_submit_failure(
            attempt=attempt, ambiguous=True, retry_after=None, now=NOW
        )
        assert retry_at is not None
        assert retry_at >= NOW + POLICY.uncertain_grace


def test_deadline_and_overdue() -> None:
    assert POLICY.deadline_of(SUBMITTED) == SUBMITTED + POLICY.deadline
    assert not POLICY.is_overdue(job(), NOW)
    assert POLICY.is_overdue(job(submitted_at=NOW - POLICY.deadline), NOW)
    assert not POLICY.is_overdue(job(status=JobStatus.PENDING, submitted_at=None), NOW)
