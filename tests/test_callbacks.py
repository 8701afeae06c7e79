"""Provider callbacks (docs/API.md, Provider callbacks), sent by the test itself over loopback HTTP.

The provider is a hand-written stand-in whose status endpoint the test controls, so the
tests can tell a callback's claim apart from the provider's truth: only the status
endpoint may make a job terminal or give it outputs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from starlette.responses import Response

from app.jobs.models import provider_output
from tests.conftest import Service, Simulator
from tests.stand_in import Call, ProviderStandIn
from tests.support import IMAGE_JOB, eventually

MIB = 1_048_576
LEGIT = [{"file_url": "https://cdn.poyo.example/real-output.mp4", "file_type": "video"}]
FORGED = [{"file_url": "https://attacker.example/malware.mp4", "file_type": "video"}]


async def queued_job(relay: Service) -> tuple[dict[str, Any], str]:
    response = await relay.client.create_job(IMAGE_JOB)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued"
    return job, job["provider"]["task_id"]


def view(task_id: str, status: str, files: list[dict[str, str]] | None = None) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "status": status,
        "progress": 100 if status in ("finished", "failed") else 50,
        "files": files or [],
        "created_time": "2025-11-12T10:30:00",
        "error_message": "generation failed" if status == "failed" else None,
    }


def wrap(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": data}


async def send(
    relay: Service,
    job_id: str,
    body: Any,
    *,
    url: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a callback the way PoYo would: JSON, no API key."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return await relay.client.http.post(
        url or relay.runtime.credentials.url(job_id),
        content=content,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["message"]
    assert "Traceback" not in response.text


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def status_changes(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["data"]["from"], e["data"]["to"]) for e in events if e["type"] == "job.status_changed"
    ]


# ---- who may call --------------------------------------------------------------------------


async def test_wrong_credential_is_401_unknown_job_is_404(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    other, _ = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    good = relay.runtime.credentials.url(job["id"])
    base, token = good.rsplit("/", 1)
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    other_token = relay.runtime.credentials.url(other["id"]).rsplit("/", 1)[1]
    before = await relay.client.job(job["id"])
    trail = await relay.client.events(job["id"])
    body = wrap(view(task_id, "finished", FORGED))
    for bad in (
        f"{base}/{flipped}",
        f"{base}/{token[:-4]}",
        f"{base}/{token}x",
        f"{base}/{token.swapcase()}",
        f"{base}/{other_token}",  # another job's valid credential
        f"{base}/not-a-credential",
        # A job that does not exist, with a made-up credential: 401, not 404, so the
        # endpoint does not reveal which jobs exist.
        good.replace(job["id"], "job_00000000000000000000000000"),
    ):
        response = await send(relay, job["id"], body, url=bad)
        assert_error(response, 401)
        assert response.json()["error"]["type"] == "authentication_error"
    assert await relay.client.job(job["id"]) == before
    assert await relay.client.events(job["id"]) == trail
    assert provider.status_calls() == []

    # The control: the right credential is heard, and the provider is asked.
    assert (await send(relay, job["id"], body)).status_code == 200
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["outputs"] == [provider_output(LEGIT[0]["file_url"], "video")]

    # A valid credential for a job that does not exist: 404, whatever the body.
    missing = "job_01jcz3q9m4b8x2v7k5n0r6t1yw"
    for unheard in (wrap(view("task-unified-1", "finished", FORGED)), b"not json"):
        response = await send(relay, missing, unheard, url=relay.runtime.credentials.url(missing))
        assert_error(response, 404)
        assert response.json()["error"]["type"] == "not_found"


async def test_only_post_is_answered_on_a_callback_url(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, _ = await queued_job(relay)
    url = relay.runtime.credentials.url(job["id"])
    trail = await relay.client.events(job["id"])
    for method in ("GET", "PUT", "DELETE"):
        response = await relay.client.http.request(method, url)
        assert_error(response, 405)
        assert response.headers["allow"] == "POST"
    assert await relay.client.events(job["id"]) == trail


UNREADABLE = [
    b"not json at all",
    b"",
    b"{",
    b"[1, 2, 3]",
    b'"finished"',
    b"null",
    b'{"status": "finished"}',
    b'{"code": 200, "data": {"status": "finished"}}',
    b'{"task_id": 42, "status": "finished"}',
    b'{"task_id": "", "status": "finished"}',
    b'{"task_id": "' + b"t" * 500 + b'", "status": "finished"}',
]


async def test_unreadable_body_or_another_task_is_400(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    _, other_task = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    provider.set_task(other_task, "finished", files=FORGED)
    before = await relay.client.job(job["id"])
    for unreadable in UNREADABLE:
        response = await send(relay, job["id"], unreadable)
        assert response.status_code == 400, (unreadable, response.text)
        assert_error(response, 400)
        assert response.json()["error"]["type"] == "bad_request"
    # A well-formed body about a task that is not this job's.
    for body in (wrap(view(other_task, "finished", FORGED)), view("task-unified-x", "failed")):
        response = await send(relay, job["id"], body)
        assert_error(response, 400)
    assert await relay.client.job(job["id"]) == before
    assert provider.status_calls() == []


async def test_nul_characters_in_a_callback_are_a_400_not_a_crash(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    before = await relay.client.job(job["id"])
    for body in (
        b"\x00\x01 not json",  # a raw NUL byte: not JSON
        b'{"task_id": "' + task_id.encode() + b'", "status": "finished", "x": "\x00"}',
        b'{"task_id": "task\\u0000other", "status": "finished"}',  # another task, escaped NUL
    ):
        response = await send(relay, job["id"], body)
        assert response.status_code == 400, (body, response.text)
        assert_error(response, 400)
    assert await relay.client.job(job["id"]) == before


# ---- size ----------------------------------------------------------------------------------


def padded(task_id: str, size: int) -> bytes:
    """A valid callback body of exactly `size` bytes."""
    base = orjson.dumps({**view(task_id, "finished"), "pad": ""})
    body = base[:-2] + b"x" * (size - len(base)) + b'"}'
    assert len(body) == size
    orjson.loads(body)
    return body


async def test_body_over_1_mib_with_content_length_is_413(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    before = await relay.client.job(job["id"])  # the connection is warm, as a provider's is
    url = relay.runtime.credentials.url(job["id"])
    for size in (MIB + 1, 4 * MIB):
        announced = await relay.client.http.post(url, content=padded(task_id, size))
        assert announced.request.headers["content-length"] == str(size)
        assert_error(announced, 413)
    assert await relay.client.job(job["id"]) == before
    assert provider.status_calls() == []


async def test_streamed_body_over_1_mib_is_413_and_1_mib_is_accepted(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    before = await relay.client.job(job["id"])
    url = relay.runtime.credentials.url(job["id"])
    for size in (MIB + 1, 4 * MIB):
        too_big = padded(task_id, size)

        async def stream(data: bytes = too_big) -> AsyncIterator[bytes]:
            for start in range(0, len(data), 64 * 1024):
                yield data[start : start + 64 * 1024]

        streamed = await relay.client.http.post(url, content=stream())
        assert "content-length" not in streamed.request.headers
        assert streamed.request.headers["transfer-encoding"] == "chunked"
        assert_error(streamed, 413)
    assert await relay.client.job(job["id"]) == before
    assert provider.status_calls() == []

    # Exactly 1 MiB is within the limit.
    response = await relay.client.http.post(url, content=padded(task_id, MIB))
    assert response.status_code == 200, response.text
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"


# ---- accepted callbacks ----------------------------------------------------------------------


async def test_wrapped_and_flat_callbacks_are_confirmed_with_the_status_endpoint(
    relay: Service, provider: ProviderStandIn
) -> None:
    for form in ("wrapped", "flat"):
        job, task_id = await queued_job(relay)
        provider.set_task(task_id, "finished", files=LEGIT)
        data = view(task_id, "finished", FORGED)  # what the body claims is not what is used
        response = await send(relay, job["id"], wrap(data) if form == "wrapped" else data)
        assert response.status_code == 200, (form, response.text)
        assert response.json() == {"received": True, "outcome": "received"}

        done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
        assert done["status"] == "succeeded", form
        assert done["outputs"] == [provider_output(LEGIT[0]["file_url"], "video")]
        assert done["progress"] == 100
        assert done["completed_at"] is not None
        assert done["provider"]["status"] == "finished"
        assert len(provider.status_calls(task_id)) >= 1
        events = await relay.client.events(job["id"])
        types = types_of(events)
        assert types.index("callback.received") < types.index("provider.polled")
        assert status_changes(events)[-1] == ("queued", "succeeded")


async def test_job_becomes_terminal_only_after_the_status_endpoint_answers(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    answer = asyncio.Event()

    async def held(_call: Call) -> Response | None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answer.wait(), 20)
        return None  # then the default: the task as set above

    provider.status_hook = held
    response = await send(relay, job["id"], wrap(view(task_id, "finished", LEGIT)))
    assert response.status_code == 200
    await eventually(lambda: _status_calls(provider, task_id), lambda n: n >= 1)
    # The callback has been received and the check is under way, but not answered yet.
    pending_check = await relay.client.job(job["id"])
    assert pending_check["status"] == "queued"
    assert pending_check["outputs"] == []
    assert pending_check["completed_at"] is None
    answer.set()
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"


async def _status_calls(provider: ProviderStandIn, task_id: str) -> int:
    return len(provider.status_calls(task_id))


async def test_forged_callbacks_never_set_outputs_or_failure(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "running", progress=30)
    forged = wrap(view(task_id, "finished", FORGED))
    response = await send(relay, job["id"], forged)
    assert response.status_code == 200

    # The service asked the provider, which says running: that is what the job shows.
    await eventually(
        lambda: relay.client.events(job["id"]),
        lambda events: "provider.polled" in types_of(events),
    )
    shown = await relay.client.job(job["id"])
    assert shown["status"] == "running"
    assert shown["outputs"] == []
    assert shown["completed_at"] is None
    assert shown["progress"] == 30
    assert "attacker.example" not in orjson.dumps(shown).decode()
    assert len(provider.status_calls(task_id)) >= 1

    # A forged "failed" does not fail a job the provider says is running.
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "running", progress=10)
    forged = view(task_id, "failed")
    forged["error_message"] = "forged: your account is suspended"
    assert (await send(relay, job["id"], forged)).status_code == 200
    await eventually(
        lambda: relay.client.events(job["id"]),
        lambda events: "provider.polled" in types_of(events),
    )
    shown = await relay.client.job(job["id"])
    assert shown["status"] == "running"
    assert shown["error"] is None


async def test_failure_message_comes_from_the_status_endpoint(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "failed", error_message="content policy violation")
    claimed = view(task_id, "failed")
    claimed["error_message"] = "something the body made up"
    assert (await send(relay, job["id"], wrap(claimed))).status_code == 200
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert done["error"]["message"] == "content policy violation"
    assert done["outputs"] == []


async def test_unstorable_provider_answers_do_not_wedge_the_job(
    relay: Service, provider: ProviderStandIn
) -> None:
    # A failure message with U+0000 (PostgreSQL cannot store it) is kept, made storable.
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "failed", error_message="policy\u0000violation")
    assert (await send(relay, job["id"], wrap(view(task_id, "failed")))).status_code == 200
    failed = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert failed["status"] == "failed"
    assert failed["error"]["message"] == "policy\ufffdviolation"

    # An output that is not an http(s) URL is never handed to the client as a result.
    job, task_id = await queued_job(relay)
    bad = [{"file_url": "javascript:alert(document.cookie)", "file_type": "video"}]
    provider.set_task(task_id, "finished", files=bad)
    assert (await send(relay, job["id"], wrap(view(task_id, "finished")))).status_code == 200
    events = await eventually(
        lambda: relay.client.events(job["id"]),
        lambda evs: "provider.poll_failed" in types_of(evs),
    )
    assert "provider.polled" not in types_of(events)
    shown = await relay.client.job(job["id"])
    assert shown["status"] == "queued"
    assert shown["outputs"] == []


# ---- stored before answering, duplicates, late and out of order ------------------------------


async def test_raw_body_is_stored_before_the_answer(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    # Odd spacing and key order: what is stored is the bytes received, not a re-encoding.
    raw = (
        b'{ "data": {"status":"finished",  "task_id": "' + task_id.encode() + b'",'
        b' "files": [], "extra": "\\u00e9t\\u00e9"}, "code":200 }'
    )
    response = await send(relay, job["id"], raw)
    assert response.status_code == 200
    # Read at once, no polling: the answer came after the store.
    events = await relay.client.events(job["id"])
    [received] = [e for e in events if e["type"] == "callback.received"]
    assert received["data"]["raw"] == raw.decode()
    assert received["data"]["task_id"] == task_id

    await relay.client.wait_for_status(job["id"], {"succeeded"})
    late = orjson.dumps(wrap(view(task_id, "running")))
    assert (await send(relay, job["id"], late)).status_code == 200
    again = orjson.dumps(view(task_id, "finished", LEGIT))
    assert (await send(relay, job["id"], again)).status_code == 200
    events = await relay.client.events(job["id"])
    raws = [e["data"].get("raw") for e in events if e["type"].startswith("callback.")]
    assert raws[-2:] == [late.decode(), again.decode()]


async def test_duplicate_after_completion_is_recorded_and_changes_nothing(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    body = wrap(view(task_id, "finished", LEGIT))
    assert (await send(relay, job["id"], body)).json()["outcome"] == "received"
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    polls = len(provider.status_calls(task_id))

    response = await send(relay, job["id"], body)
    assert response.status_code == 200
    assert response.json() == {"received": True, "outcome": "duplicate"}
    assert await relay.client.job(job["id"]) == done
    events = await relay.client.events(job["id"])
    assert types_of(events).count("callback.duplicate") == 1
    assert types_of(events).count("callback.received") == 1
    assert [c for c in status_changes(events) if c[1] == "succeeded"] == [("queued", "succeeded")]
    assert len(provider.status_calls(task_id)) == polls  # nothing left to confirm


async def test_concurrent_duplicates_make_one_state_change(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    body = wrap(view(task_id, "finished", LEGIT))
    responses = await asyncio.gather(*(send(relay, job["id"], body) for _ in range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["duplicate"] * 5 + ["received"]
    await relay.client.wait_for_status(job["id"], {"succeeded"})
    events = await relay.client.events(job["id"])
    assert types_of(events).count("callback.received") == 1
    assert types_of(events).count("callback.duplicate") == 5
    terminal = [change for change in status_changes(events) if change[1] == "succeeded"]
    assert len(terminal) == 1


async def test_late_running_after_finished_is_recorded_and_ignored(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    assert (await send(relay, job["id"], view(task_id, "finished", LEGIT))).status_code == 200
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"

    for stale in ("running", "not_started"):
        response = await send(relay, job["id"], wrap(view(task_id, stale)))
        assert response.status_code == 200
        assert response.json()["outcome"] == "ignored"
    # A contradicting terminal claim after the fact is not a duplicate, and is ignored too.
    contradiction = await send(relay, job["id"], view(task_id, "failed"))
    assert contradiction.status_code == 200
    assert contradiction.json()["outcome"] in ("ignored", "duplicate")

    assert await relay.client.job(job["id"]) == done
    events = await relay.client.events(job["id"])
    assert types_of(events).count("callback.ignored") >= 2
    assert status_changes(events)[-1] == ("queued", "succeeded")


async def test_in_flight_duplicates_and_stale_callbacks_change_nothing(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    provider.set_task(task_id, "finished", files=LEGIT)
    # The provider holds the status answer back: the finished claim awaits confirmation.
    provider.status_hook = _never_answering(provider)
    finished = wrap(view(task_id, "finished", LEGIT))
    assert (await send(relay, job["id"], finished)).json()["outcome"] == "received"
    again = await send(relay, job["id"], finished)
    assert again.status_code == 200
    assert again.json()["outcome"] == "duplicate"
    stale = await send(relay, job["id"], view(task_id, "running"))
    assert stale.status_code == 200
    assert stale.json()["outcome"] == "ignored"
    types = types_of(await relay.client.events(job["id"]))
    assert types.count("callback.received") == 1
    assert types.count("callback.duplicate") == 1
    assert types.count("callback.ignored") == 1
    assert (await relay.client.job(job["id"]))["status"] == "queued"


def _never_answering(provider: ProviderStandIn) -> Any:
    async def hook(_call: Call) -> Response:
        return await provider.hang()

    return hook


async def test_genuine_callback_after_an_unconfirmed_claim_still_completes_the_job(
    relay: Service, provider: ProviderStandIn
) -> None:
    job, task_id = await queued_job(relay)
    # A "finished" claim the provider does not confirm: a forgery, or a status endpoint
    # that lags behind its own callbacks.
    provider.set_task(task_id, "running", progress=50)
    early = await send(relay, job["id"], wrap(view(task_id, "finished", FORGED)))
    assert early.status_code == 200
    await eventually(
        lambda: relay.client.events(job["id"]),
        lambda events: "provider.polled" in types_of(events),
    )
    assert (await relay.client.job(job["id"]))["status"] == "running"

    # Now the task really finishes and the provider calls back.
    provider.set_task(task_id, "finished", files=LEGIT)
    genuine = await send(relay, job["id"], wrap(view(task_id, "finished", LEGIT)))
    assert genuine.status_code == 200
    done = await relay.client.wait_for_status(job["id"], {"succeeded", "failed"}, seconds=5)
    assert done["outputs"] == [provider_output(LEGIT[0]["file_url"], "video")]


# ---- the simulator: a provider we did not write for these tests -------------------------------


async def test_flat_duplicated_and_reordered_callbacks_from_the_simulator(
    service: Service, simulator: Simulator
) -> None:
    await simulator.set_faults(
        flat_callbacks=True, duplicate_callback_rate=1.0, reorder_callback_rate=1.0
    )
    job = (await service.client.create_job(IMAGE_JOB)).json()
    done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    events = await eventually(
        lambda: service.client.events(job["id"]),
        lambda evs: len([e for e in evs if e["type"].startswith("callback.")]) >= 3,
    )
    types = types_of(events)
    assert types.count("callback.received") == 1
    assert "callback.duplicate" in types
    assert "callback.ignored" in types  # the stale "running" sent after "finished"
    assert len([c for c in status_changes(events) if c[1] == "succeeded"]) == 1
    [task] = await simulator.tasks()
    assert task["callbacks_sent"] == 3
    assert await service.client.job(job["id"]) == done
