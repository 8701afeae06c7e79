"""`/metrics` as Prometheus scrapes it, after real jobs ran end to end over loopback."""

from __future__ import annotations

import asyncio
import re
import signal
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from app.catalog.compiled import Catalog
from app.catalog.document import load_snapshot
from app.config import SANDBOX_MOUNT_PATH
from app.jobs.states import JobStatus
from app.main import create_app
from app.sandbox.simulator import create_simulator
from app.ui.router import router as ui_router
from tests.clirun import POYO_RELAY, clean_env
from tests.conftest import SIMULATOR_KEY, Service, ServiceFactory, Simulator
from tests.support import IMAGE_JOB, TEXT_JOB, eventually, free_socket
from tests.test_deploy_config import healthcheck_command, run_healthcheck, services

PREFIX = "poyo_relay_"
NAME = re.compile(r"^poyo_relay_[a-z][a-z0-9_]*$")
LABEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# What a label value may look like when it is not from a known list: a short identifier.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9_.]{0,47}$")
UNBOUNDED = re.compile(r"job_[0-9a-z]{26}|task-|prk_|key_[0-9a-z]{26}|https?://")
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(http: httpx.AsyncClient) -> tuple[Series, list[Sample], dict[str, str]]:
    """Every sample by (name, labels), the samples, and each family's type."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    series: Series = {}
    samples: list[Sample] = []
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        if not family.name.startswith(PREFIX):
            continue
        types[family.name] = family.type
        for sample in family.samples:
            samples.append(sample)
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series, samples, types


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def label_values(samples: Iterable[Sample], name: str, label: str) -> set[str]:
    return {s.labels[label] for s in samples if s.name.startswith(name) and label in s.labels}


async def test_metrics_carry_the_job_lifecycle(service: Service, simulator: Simulator) -> None:
    client = service.client
    http = client.http
    before, _, _ = await scrape(http)

    # a provider outage on the first submission: errors are counted, the worker retries
    await simulator.set_faults(submit_error_rate=1.0)
    flaky = (await client.create_job(IMAGE_JOB)).json()
    assert flaky["status"] == "pending"
    await simulator.set_faults(submit_error_rate=0.0)
    ok = (await client.create_job(IMAGE_JOB)).json()
    failing = {**TEXT_JOB, "input": {"prompt": "a lighthouse [fail]"}}
    bad = (await client.create_job(failing)).json()
    for job in (flaky, ok):
        assert (await client.wait_for_status(job["id"], {"succeeded", "failed"}))[
            "status"
        ] == "succeeded"
    assert (await client.wait_for_status(bad["id"], {"succeeded", "failed"}))["status"] == "failed"
    forged = await http.post(f"/v1/callbacks/poyo/{ok['id']}/not-the-token", json={})
    assert forged.status_code == 401

    after, samples, types = await scrape(http)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    image, text = IMAGE_JOB["model"], TEXT_JOB["model"]
    assert types["poyo_relay_jobs_created"] == "counter"
    assert not [s.name for s in samples if s.name.endswith("_created")], "no _created series"
    assert delta("poyo_relay_jobs_created_total", model=image) == 2
    assert delta("poyo_relay_jobs_created_total", model=text) == 1
    assert delta("poyo_relay_jobs_finished_total", model=image, status="succeeded") == 2
    assert delta("poyo_relay_jobs_finished_total", model=text, status="failed") == 1
    assert delta("poyo_relay_jobs_finished_total", model=text, status="succeeded") == 0

    assert types["poyo_relay_job_duration_seconds"] == "histogram"
    duration = "poyo_relay_job_duration_seconds"
    assert delta(f"{duration}_count", model=image, status="succeeded") == 2
    assert delta(f"{duration}_bucket", model=image, status="succeeded", le="+Inf") == 2
    assert delta(f"{duration}_sum", model=image, status="succeeded") > 0
    assert delta(f"{duration}_count", model=text, status="failed") == 1

    # one callback per job from the provider, and the forged one
    assert delta("poyo_relay_callbacks_total", outcome="received") == 3
    assert delta("poyo_relay_callbacks_total", outcome="rejected_credential") == 1

    latency = "poyo_relay_provider_request_duration_seconds"
    assert types[latency] == "histogram"
    errors = delta("poyo_relay_provider_errors_total", endpoint="submit", kind="unavailable")
    assert errors >= 1
    # every attempt is timed: the failed ones and one success per job
    assert delta(f"{latency}_count", endpoint="submit") == errors + 3
    assert delta(f"{latency}_count", endpoint="status") >= 3  # each outcome was confirmed

    assert types["poyo_relay_worker_queue_depth"] == "gauge"
    assert label_values(samples, "poyo_relay_worker_queue_depth", "queue") >= {
        "pending",
        "awaiting_reconcile",
    }
    assert all(s.value >= 0 for s in samples if s.name == "poyo_relay_worker_queue_depth")
    assert types["poyo_relay_worker_loop_lag_seconds"] == "gauge"
    assert any(s.name == "poyo_relay_worker_loop_lag_seconds" for s in samples)

    requests = "poyo_relay_http_requests_total"
    assert delta(requests, route="/v1/jobs", method="POST", status="2xx") == 3
    callback_route = "/v1/callbacks/poyo/{job_id}/{token}"
    assert delta(requests, route=callback_route, method="POST", status="4xx") == 1
    assert delta(requests, route=callback_route, method="POST", status="2xx") == 3


async def test_metric_names_and_labels_are_bounded(service: Service) -> None:
    client = service.client
    job = (await client.create_job(IMAGE_JOB)).json()
    await client.wait_for_status(job["id"], {"succeeded"})
    # requests whose paths carry ids and secrets, routed and not
    await client.get(f"/v1/jobs/{job['id']}")
    await client.get("/v1/jobs/job_00000000000000000000000000")
    await client.http.get("/no/such/place/prk_0123456789")
    await client.http.post(f"/v1/callbacks/poyo/{job['id']}/guess", json={})

    _, samples, types = await scrape(client.http)
    app = create_app(service.settings)
    routes = set(app.openapi()["paths"]) | {getattr(r, "path", None) or "" for r in app.routes}
    # The registry is the process's: a sandbox-mode service run earlier by another test
    # counted its mounted simulator's requests under the mount's path.
    routes |= {SANDBOX_MOUNT_PATH + getattr(r, "path", "") for r in create_simulator().routes}
    # The dashboard's pages are left out of the OpenAPI document (tests/test_ui*.py, run
    # earlier in the same process, count them).
    routes |= {getattr(route, "path", "") for route in ui_router.routes}
    closed = {
        "model": set(Catalog(load_snapshot()).models),
        "endpoint": {"submit", "status", "balance"},
        "kind": {"rejected", "unavailable", "error"},
        "queue": {"pending", "awaiting_reconcile"},
        "route": routes | {"unmatched"},
        "method": HTTP_METHODS,
    }
    seen: Counter[str] = Counter()
    for sample in samples:
        assert NAME.match(sample.name), sample.name
        for label, label_value in sample.labels.items():
            seen[label] += 1
            assert LABEL_NAME.match(label), (sample.name, label)
            assert not UNBOUNDED.search(label_value), (sample.name, label, label_value)
            if label == "le":
                assert sample.name.endswith("_bucket")
            elif label in closed:
                assert label_value in closed[label], (sample.name, label, label_value)
            elif label == "status" and sample.name.startswith("poyo_relay_http_"):
                assert label_value in {"1xx", "2xx", "3xx", "4xx", "5xx"}, label_value
            elif label == "status":
                assert label_value in {s.value for s in JobStatus}, label_value
            else:
                assert IDENTIFIER.match(label_value), (sample.name, label, label_value)
    assert {"model", "status", "outcome", "endpoint", "queue", "route"} <= set(seen)
    for name, kind in types.items():
        if kind == "counter":
            assert any(s.name == f"{name}_total" for s in samples), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name


async def test_a_separate_worker_serves_its_own_metrics(
    start_service: ServiceFactory, simulator: Simulator, database_url: str, tmp_path: Path
) -> None:
    """The compose layout: an API without a worker, and `poyo-relay worker --metrics-port`.
    The worker confirms and finishes jobs, so the series it moves are on its own /metrics."""
    service = await start_service(run_worker=False)
    reserved = free_socket()
    port = reserved.getsockname()[1]
    reserved.close()
    env = clean_env(
        DATABASE_URL=database_url,
        POYO_API_KEY=SIMULATOR_KEY,
        POYO_BASE_URL=simulator.url,
        PUBLIC_BASE_URL=service.url,
        WORKER_POLL_SECONDS="0.05",
        RETRY_BASE_SECONDS="0.05",
        LOG_FORMAT="json",
    )
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = await asyncio.create_subprocess_exec(
            POYO_RELAY,
            "worker",
            "--metrics-port",
            str(port),
            "--metrics-host",
            "127.0.0.1",
            env=env,
            cwd=tmp_path,
            stdout=log_file,
            stderr=log_file,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def worker_metrics() -> int:
                try:
                    return (await http.get("/metrics")).status_code
                except httpx.TransportError:
                    assert worker.returncode is None, log_path.read_text()
                    return 0

            await eventually(worker_metrics, lambda status: status == 200, seconds=30)
            job = (await service.client.create_job(IMAGE_JOB)).json()
            done = await service.client.wait_for_status(job["id"], {"succeeded", "failed"}, 30)
            assert done["status"] == "succeeded", log_path.read_text()

            series, samples, types = await scrape(http)
        model = IMAGE_JOB["model"]
        # a fresh process: exact figures
        assert value(series, "poyo_relay_jobs_finished_total", model=model, status="succeeded") == 1
        assert (
            value(series, "poyo_relay_job_duration_seconds_count", model=model, status="succeeded")
            == 1
        )
        assert value(series, "poyo_relay_jobs_created_total", model=model) == 0  # the API's
        assert (
            value(series, "poyo_relay_provider_request_duration_seconds_count", endpoint="status")
            >= 1
        )
        assert value(series, "poyo_relay_worker_items_total", loop="reconcile", result="ok") >= 1
        assert label_values(samples, "poyo_relay_worker_queue_depth", "queue") == {
            "pending",
            "awaiting_reconcile",
        }
        assert types["poyo_relay_worker_loop_lag_seconds"] == "gauge"

        api_series, _, _ = await scrape(service.client.http)
        assert value(api_series, "poyo_relay_jobs_created_total", model=model) >= 1

        # compose's health check for the worker passes against it
        check = healthcheck_command(services()["worker"])
        assert await run_healthcheck(check, port) == 0
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), 30)
    assert code == 0, log_path.read_text()
