"""The job state machine, checked exhaustively against the rule written out by hand.

Rule (docs/API.md, Statuses): pending → queued → running → succeeded | failed; steps may be
skipped, a status never moves backwards, a terminal status is final, and a status never
"moves" to itself.
"""

from __future__ import annotations

import itertools

import pytest

from app.jobs.states import (
    ACTIVE,
    TERMINAL,
    JobStatus,
    can_transition,
    from_provider,
    is_terminal,
    provider_rank,
    sources_of,
)
from app.provider.schemas import ProviderStatus

P, Q, R, S, F = (
    JobStatus.PENDING,
    JobStatus.QUEUED,
    JobStatus.RUNNING,
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
)

# Every allowed move, spelled out; everything else among the 25 pairs is forbidden.
ALLOWED = {
    (P, Q),
    (P, R),
    (P, S),
    (P, F),
    (Q, R),
    (Q, S),
    (Q, F),
    (R, S),
    (R, F),
}
ALL_PAIRS = list(itertools.product(JobStatus, JobStatus))


def test_statuses_are_exactly_the_contracts() -> None:
    assert {s.value for s in JobStatus} == {"pending", "queued", "running", "succeeded", "failed"}
    assert {s.value for s in ProviderStatus} == {"not_started", "running", "finished", "failed"}


def test_every_pair_is_covered() -> None:
    assert len(ALL_PAIRS) == 25
    assert set(ALL_PAIRS) >= ALLOWED


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=lambda s: str(s))
def test_transition(current: JobStatus, target: JobStatus) -> None:
    assert can_transition(current, target) is ((current, target) in ALLOWED)


@pytest.mark.parametrize("status", list(JobStatus), ids=str)
def test_no_self_transition(status: JobStatus) -> None:
    assert not can_transition(status, status)


@pytest.mark.parametrize("status", [S, F], ids=str)
def test_terminal_is_final(status: JobStatus) -> None:
    assert is_terminal(status)
    assert not any(can_transition(status, target) for target in JobStatus)


@pytest.mark.parametrize("status", [P, Q, R], ids=str)
def test_active_statuses_can_still_end_either_way(status: JobStatus) -> None:
    assert not is_terminal(status)
    assert can_transition(status, S)
    assert can_transition(status, F)


def test_terminal_and_active_partition_the_statuses() -> None:
    assert frozenset({S, F}) == TERMINAL
    assert frozenset({P, Q, R}) == ACTIVE
    assert set(JobStatus) == TERMINAL | ACTIVE
    assert not TERMINAL & ACTIVE


def test_nothing_moves_back_to_pending() -> None:
    assert not any(can_transition(status, P) for status in JobStatus)


def _paths(start: JobStatus) -> list[list[JobStatus]]:
    """Every maximal walk through allowed transitions from `start`."""
    nexts = [t for t in JobStatus if can_transition(start, t)]
    if not nexts:
        return [[start]]
    return [[start, *rest] for t in nexts for rest in _paths(t)]


def test_every_walk_is_finite_without_repeats_and_ends_terminal() -> None:
    walks = _paths(P)
    # pending→{queued,running,succeeded,failed}, with queued and running branching on.
    assert len(walks) == 8
    for walk in walks:
        assert len(walk) == len(set(walk)), walk  # never revisits a status: no cycles
        assert is_terminal(walk[-1]), walk
        assert len(walk) <= 4
    assert [P, Q, R, S] in walks
    assert [P, Q, R, F] in walks
    assert [P, S] in walks


@pytest.mark.parametrize("target", list(JobStatus), ids=str)
def test_sources_of_agrees_with_can_transition(target: JobStatus) -> None:
    expected = frozenset(current for current, to in ALLOWED if to == target)
    assert sources_of(target) == expected
    assert sources_of(target) == frozenset(s for s in JobStatus if can_transition(s, target))
    assert target not in sources_of(target)
    assert not sources_of(target) & TERMINAL


def test_sources_of_spelled_out() -> None:
    assert sources_of(P) == frozenset()
    assert sources_of(Q) == {P}
    assert sources_of(R) == {P, Q}
    assert sources_of(S) == {P, Q, R}
    assert sources_of(F) == {P, Q, R}


@pytest.mark.parametrize(
    ("provider", "job"),
    [
        (ProviderStatus.NOT_STARTED, Q),
        (ProviderStatus.RUNNING, R),
        (ProviderStatus.FINISHED, S),
        (ProviderStatus.FAILED, F),
    ],
    ids=str,
)
def test_provider_status_mapping(provider: ProviderStatus, job: JobStatus) -> None:
    assert from_provider(provider) is job
    assert from_provider(ProviderStatus(provider.value)) is job


def test_provider_status_never_maps_to_pending() -> None:
    assert P not in {from_provider(s) for s in ProviderStatus}


def test_provider_rank_orders_provider_statuses() -> None:
    ns, run, fin, fail = (
        ProviderStatus.NOT_STARTED,
        ProviderStatus.RUNNING,
        ProviderStatus.FINISHED,
        ProviderStatus.FAILED,
    )
    assert provider_rank(ns) < provider_rank(run) < provider_rank(fin)
    assert provider_rank(fin) == provider_rank(fail)


@pytest.mark.parametrize(
    ("earlier", "later"), list(itertools.product(ProviderStatus, ProviderStatus)), ids=str
)
def test_provider_progress_is_a_forward_move_exactly_when_rank_grows(
    earlier: ProviderStatus, later: ProviderStatus
) -> None:
    # Applying the provider's statuses in order moves the job exactly when the
    # provider has gone further than the status the job reflects.
    moves = can_transition(from_provider(earlier), from_provider(later))
    assert moves is (provider_rank(later) > provider_rank(earlier))


def test_unknown_values_are_refused() -> None:
    with pytest.raises(ValueError, match="done"):
        JobStatus("done")
    with pytest.raises(ValueError, match="succeeded"):
        ProviderStatus("succeeded")
