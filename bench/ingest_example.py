"""Variant (d) of the ingest benchmark: an in-memory callback receiver.

It does the work of the receiver PoYo publishes as its FastAPI example (PoyoAPI/poyo-examples,
`webhooks/fastapi/main.py`), written for this benchmark rather than copied: a FastAPI app
of its own, no middleware, whose POST handler

- reads the body with `Request.json()` (the standard library's parser, as there);
- takes the task id and status from `data` (or the top level) and answers 400 without an
  id, 202 "ignored" for a task id it does not know (the known ones come from a pool file,
  where the example reads a list from its environment);
- answers "duplicate" when the dict it keeps in memory already holds that task's status,
  otherwise stores it;
- writes one JSON line to stdout with `print` (the harness sends stdout to the server's
  log file, as a deployment would);
- schedules a `BackgroundTask`: a plain function, so Starlette runs it in its thread pool
  after the answer, as the example's is. The example's function asks PoYo's status
  endpoint about the task; here it only hands the task id to an in-memory queue of tasks
  to reconcile: the service's own confirmation is the worker's, and no worker runs in
  this benchmark either.

Nothing is durable: a restart forgets every callback, and each uvicorn worker process has
its own dict. The job id and token in the path are there because the load generator sends
every variant the same requests; they are not checked.

Served by `python -m bench.ingest_example --port P --workers N --pool FILE`, uvicorn run with
the options of `bench.ingest_app` (and `poyo-relay serve`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import deque
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request
from starlette.responses import JSONResponse

EXAMPLE_PREFIX = "/bench/example"
FACTORY = "bench.ingest_example:create_example_app"
POOL_ENV = "BENCH_EXAMPLE_POOL"  # a pool file of the ingest benchmark: "job token task" lines
ACCEPTED_MARK = '"accepted": true'  # in each log line of an accepted callback


def known_task_ids(pool_file: str) -> set[str]:
    if not pool_file:
        return set()
    known = set()
    for line in Path(pool_file).read_text().splitlines():
        parts = line.split()
        if len(parts) == 3:
            known.add(parts[2])
    return known


def create_example_app() -> FastAPI:
    """uvicorn factory (one app per worker process, each with its own memory)."""
    known = known_task_ids(os.environ.get(POOL_ENV, ""))
    statuses: dict[str, str] = {}
    to_reconcile: deque[str] = deque(maxlen=1_000_000)
    app = FastAPI(title="bench: in-memory callback receiver", openapi_url=None)

    def reconcile_later(task_id: str) -> None:
        to_reconcile.append(task_id)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post(EXAMPLE_PREFIX + "/{job_id}/{token}")
    async def receive(
        job_id: str, token: str, request: Request, background: BackgroundTasks
    ) -> Any:
        event = await request.json()
        data = event.get("data") if isinstance(event, dict) else None
        if not isinstance(data, dict):
            data = event if isinstance(event, dict) else {}
        task_id = data.get("task_id")
        if not task_id:
            return JSONResponse({"ok": False, "error": "no task_id"}, status_code=400)
        if task_id not in known:
            return JSONResponse({"ok": True, "ignored": "unknown task_id"}, status_code=202)
        status = str(data.get("status") or "unknown")
        if statuses.get(task_id) == status:
            return {"ok": True, "duplicate": True}
        statuses[task_id] = status
        print(json.dumps({"task_id": task_id, "status": status, "accepted": True}))
        background.add_task(reconcile_later, task_id)
        return {"ok": True}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool", default="", help="pool file whose task ids are known")
    args = parser.parse_args()
    if args.pool:
        os.environ[POOL_ENV] = args.pool  # inherited by the spawned workers
    # The options of bench.ingest_app's main() (and `poyo-relay serve`).
    uvicorn.run(
        FACTORY,
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=8,
        log_level=os.environ.get("LOG_LEVEL", "INFO").lower(),
    )


if __name__ == "__main__":
    main()
