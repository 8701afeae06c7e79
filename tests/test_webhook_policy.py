"""The delivery rules (app/webhooks/policy.py), exhaustively: Svix's schedule with jitter,
Retry-After, 410 Gone, disabling after a long run of failures, manual resends."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.config import Settings
from app.webhooks.models import DeliveryState, WebhookEventType
from app.webhooks.outbox import hears
from app.webhooks.policy import JITTER, Answer, Rules, excerpt, judge, retry_delay

SVIX = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
RULES = Rules(retry_delays=SVIX, disable_after=timedelta(days=5))
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FAILED = Answer(http_status=500)


def test_the_default_schedule_is_svixs() -> None:
    assert Settings(_env_file=None).webhook_retry_delays == SVIX


@pytest.mark.parametrize("attempts", range(1, len(SVIX) + 1))
def test_each_retry_waits_its_step_within_the_jitter(attempts: int) -> None:
    planned = SVIX[attempts - 1]
    rng = random.Random(attempts)
    delays = [retry_delay(RULES, attempts, FAILED, rng) for _ in range(200)]
    assert all(d is not None for d in delays)
    values = [d for d in delays if d is not None]
    assert min(values) >= planned * (1 - JITTER)
    assert max(values) <= planned * (1 + JITTER)
    assert max(values) - min(values) > planned * JITTER  # it is spread, not fixed


def test_after_the_last_step_the_delivery_is_given_up() -> None:
    assert retry_delay(RULES, len(SVIX) + 1, FAILED) is None
    outcome = judge(
        RULES, answer=FAILED, attempts=len(SVIX) + 1, manual=False, failing_since=NOW, now=NOW
    )
    assert outcome.state is DeliveryState.FAILED
    assert outcome.next_attempt_at is None
    assert outcome.disable_reason is None


def test_a_whole_schedule_takes_about_a_day_and_a_half() -> None:
    rng = random.Random(7)
    total = sum(retry_delay(RULES, n, FAILED, rng) or 0 for n in range(1, len(SVIX) + 1))
    assert 0.8 * sum(SVIX) <= total <= 1.2 * sum(SVIX)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_on_429_and_503_waits_at_least_that_long(status: int) -> None:
    answer = Answer(http_status=status, retry_after=120.0)
    assert retry_delay(RULES, 1, answer, random.Random(1)) == 120.0
    # never sooner than the schedule either
    assert (retry_delay(RULES, 2, answer, random.Random(1)) or 0) >= 300 * (1 - JITTER)


@pytest.mark.parametrize("status", [500, 502, 404, 400])
def test_retry_after_on_other_statuses_is_not_an_instruction(status: int) -> None:
    answer = Answer(http_status=status, retry_after=3600.0)
    assert (retry_delay(RULES, 1, answer, random.Random(1)) or 0) <= 5 * (1 + JITTER)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_delivers_and_the_endpoint_is_healthy(status: int) -> None:
    outcome = judge(
        RULES,
        answer=Answer(http_status=status),
        attempts=3,
        manual=False,
        failing_since=NOW - timedelta(days=4),
        now=NOW,
    )
    assert outcome.state is DeliveryState.SUCCEEDED
    assert outcome.failing_since is None


@pytest.mark.parametrize(
    "answer",
    [Answer(None, "timed out"), Answer(300), Answer(301), Answer(404), Answer(500), Answer(199)],
)
def test_anything_else_is_retried_and_starts_a_run_of_failures(answer: Answer) -> None:
    outcome = judge(RULES, answer=answer, attempts=1, manual=False, failing_since=None, now=NOW)
    assert outcome.state is DeliveryState.PENDING
    assert outcome.failing_since == NOW
    assert outcome.next_attempt_at is not None
    assert timedelta(seconds=4) <= outcome.next_attempt_at - NOW <= timedelta(seconds=6)


def test_410_gone_disables_at_once() -> None:
    outcome = judge(
        RULES, answer=Answer(410), attempts=1, manual=False, failing_since=None, now=NOW
    )
    assert outcome.state is DeliveryState.FAILED
    assert outcome.disable_reason == "the endpoint answered 410 Gone"


def test_failing_for_five_days_disables_and_says_since_when() -> None:
    since = NOW - timedelta(days=5)
    just_before = judge(
        RULES,
        answer=FAILED,
        attempts=2,
        manual=False,
        failing_since=since + timedelta(seconds=1),
        now=NOW,
    )
    assert just_before.disable_reason is None
    assert just_before.failing_since == since + timedelta(seconds=1)  # the run goes on
    outcome = judge(RULES, answer=FAILED, attempts=2, manual=False, failing_since=since, now=NOW)
    assert outcome.state is DeliveryState.FAILED
    assert outcome.disable_reason == "every attempt failed since 2026-11-25T12:00:00+00:00"


def test_a_manual_resend_is_tried_once() -> None:
    outcome = judge(RULES, answer=FAILED, attempts=1, manual=True, failing_since=None, now=NOW)
    assert outcome.state is DeliveryState.FAILED
    assert outcome.failing_since == NOW
    delivered = judge(
        RULES, answer=Answer(204), attempts=9, manual=True, failing_since=NOW, now=NOW
    )
    assert delivered.state is DeliveryState.SUCCEEDED


def test_the_answer_kept_is_its_first_kibibyte_as_text() -> None:
    assert excerpt(b"ok") == "ok"
    assert excerpt(b"y" * 5000) == "y" * 1024
    assert excerpt(b"\xff\xfeok") == "\ufffd\ufffdok"


@pytest.mark.parametrize("event_type", list(WebhookEventType))
def test_an_empty_filter_hears_every_job_event_and_no_test(event_type: WebhookEventType) -> None:
    assert hears([], event_type) is (event_type is not WebhookEventType.TEST)
    assert hears([event_type.value], event_type)
    others = [t.value for t in WebhookEventType if t is not event_type]
    assert not hears(others[:1], event_type) or others[:1] == [event_type.value]
