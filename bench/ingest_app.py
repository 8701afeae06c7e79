"""The service's app plus two baseline endpoints, in the same stack and middleware.

- `POST /v1/callbacks/poyo/{job_id}/{token}`: (a) the real callback endpoint, untouched;
- `POST /bench/bare/{job_id}/{token}`: (b) reads and parses the same JSON body, answers 200;
- `POST /bench/naive/{job_id}/{token}`: (c) the naive durable endpoint: checks the same
  credential, then one SQLAlchemy ORM transaction per request (load the job, insert the
  event, update the job).

Served by `python -m bench.ingest_app --port P --workers N`, which runs uvicorn exactly as
`poyo-relay serve` does; settings come from the environment like the service's.
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import JSONResponse

from app.config import load_settings
from app.errors import AppError, BadRequest, NotFound, Unauthorized
from app.jobs.models import Job, JobEvent
from app.main import create_app
from app.provider.schemas import ProviderStatus, unwrap
from app.timeutil import utcnow
from app.web.deps import RuntimeDep

BARE_PREFIX = "/bench/bare"
NAIVE_PREFIX = "/bench/naive"
NAIVE_EVENT = "bench.naive_callback"
FACTORY = "bench.ingest_app:create_bench_app"

router = APIRouter(include_in_schema=False)


def _error(error: AppError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status_code)


@router.post(BARE_PREFIX + "/{job_id}/{token}")
async def bare(job_id: str, token: str, request: Request) -> Any:
    """(b): the floor of the stack: routing, middleware, reading and parsing the body."""
    payload = unwrap(orjson.loads(await request.body()))
    if not isinstance(payload, dict):
        return _error(BadRequest("not an object"))
    return JSONResponse({"received": True, "outcome": "received"})


@router.post(NAIVE_PREFIX + "/{job_id}/{token}")
async def naive(job_id: str, token: str, request: Request, runtime: RuntimeDep) -> Any:
    """(c): what a first version would do: one ORM transaction per callback."""
    body = await request.body()
    payload = unwrap(orjson.loads(body))
    if not isinstance(payload, dict):
        return _error(BadRequest("not an object"))
    if not runtime.credentials.verify(job_id, token):
        return _error(Unauthorized("bad credential"))
    now = utcnow()
    async with runtime.db.write() as conn:
        session = AsyncSession(bind=conn)
        job = await session.get(Job, job_id)
        if job is None:
            return _error(NotFound("no such job"))
        session.add(
            JobEvent(
                job_id=job_id,
                type=NAIVE_EVENT,
                created_at=now,
                data={
                    "task_id": payload.get("task_id"),
                    "status": payload.get("status"),
                    "signed": False,
                    "raw": body.decode("utf-8", errors="replace"),
                },
            )
        )
        job.callback_status = ProviderStatus(payload["status"])
        job.next_check_at = now
        await session.flush()
    return JSONResponse({"received": True, "outcome": "received"})


def create_bench_app() -> FastAPI:
    """uvicorn factory: the service's app, configured from the environment, plus (b), (c)."""
    app = create_app(load_settings())
    app.include_router(router)
    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--factory",
        default=FACTORY,
        help="module:callable building the app (to measure a candidate change to app/)",
    )
    args = parser.parse_args()
    settings = load_settings()
    # The same uvicorn options as `poyo-relay serve` (app/cli.py).
    uvicorn.run(
        args.factory,
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=8,
        log_level=settings.log_level.lower(),
    )


if __name__ == "__main__":
    main()
