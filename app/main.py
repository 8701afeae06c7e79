"""The ASGI app (`app.main:app`): routers, error handlers, middleware, and the lifespan
that builds the runtime and, unless RUN_WORKER=false, runs the background worker."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import AsyncIterator, Callable

import structlog
from fastapi import FastAPI

from app import __version__
from app.archive.router import router as outputs_router
from app.billing.router import router as estimates_router
from app.billing.router import usage_router
from app.callbacks.credentials import CALLBACK_PATH
from app.callbacks.router import CallbackRoute
from app.catalog.router import router as models_router
from app.config import SANDBOX_MOUNT_PATH, Settings, SettingsError, get_settings
from app.jobs.router import router as jobs_router
from app.lifecycle import on_termination
from app.logs import REDACTOR, configure_logging
from app.ops.router import router as ops_router
from app.runtime import Runtime
from app.sandbox.simulator import Faults, create_simulator
from app.streams.router import router as streams_router
from app.ui.router import router as ui_router
from app.ui.router import static_assets
from app.web.errors import install_error_handlers
from app.web.middleware import BodySizeLimit, InFlight, RequestContext
from app.web.openapi import install_openapi
from app.webhooks.router import router as webhooks_router
from app.worker.runner import Worker

log = structlog.get_logger(__name__)

REQUEST_HAND_OVER_SECONDS = 2.0
GC_THRESHOLDS = (50_000, 20, 10)
DEFAULT_GC_THRESHOLDS = gc.get_threshold()
DESCRIPTION = (
    "A durable broker for asynchronous video generation on PoYo AI. Submit a job, "
    "then read it, its outputs and its audit trail. Authenticate with "
    "`Authorization: Bearer <API key>`."
)


def _secrets(settings: Settings) -> list[str]:
    return [
        settings.poyo_api_key.get_secret_value(),
        settings.poyo_webhook_secret.get_secret_value(),
        settings.callback_secret.get_secret_value(),
    ]


def _stopping(runtime: Runtime, worker: Worker | None) -> Callable[[], None]:
    """What a termination signal does at once: the worker stops claiming, and streams and
    waits end (uvicorn's drain would otherwise wait for them; their clients resume)."""

    def stop() -> None:
        runtime.feed.request_close()
        if worker is not None:
            worker.request_stop()

    return stop


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    REDACTOR.register(_secrets(settings))
    simulator = (
        create_simulator(
            Faults(
                queue_seconds=settings.sandbox_queue_seconds,
                run_seconds=settings.sandbox_run_seconds,
            )
        )
        if settings.sandbox_mode
        else None
    )

    in_flight = InFlight()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings)
        app.state.runtime = runtime
        await runtime.start_feed()
        worker = runtime.worker() if settings.run_worker else None
        if worker is not None:
            worker.start()
        # Everything built so far lives as long as the process: keep it out of the garbage
        # collector's full passes, which would otherwise pause every request now and then.
        gc.collect()
        gc.freeze()
        # Thousands of open streams and waits are a million live objects: the collector's
        # full passes would pause every request for most of a second. Collect the young
        # generation less often, and so the old one much less (bench/README.md, waiters).
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "service_started",
            sandbox=settings.sandbox_mode,
            worker=settings.run_worker,
            provider=settings.provider_base_url,
        )
        try:
            with on_termination(_stopping(runtime, worker)):
                yield
        finally:
            if worker is not None:
                # It stopped claiming when the signal came; what is still running by the end
                # of the connection drain is cancelled and its leases released.
                await worker.stop(grace_seconds=1.0)
            # Requests cut off by the server's drain hand their jobs over first.
            await in_flight.drain(REQUEST_HAND_OVER_SECONDS)
            if simulator is not None:
                await simulator.state.simulator.aclose()
            await runtime.close()
            # Let this app's objects be collected again (tests start many apps per process).
            gc.unfreeze()
            gc.set_threshold(*DEFAULT_GC_THRESHOLDS)
            log.info("service_stopped")

    app = FastAPI(
        title="poyo-relay",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # app.web.openapi serves them, without FastAPI's CDN-hosted scripts and styles.
        docs_url=None,
        redoc_url=None,
        # Our own Prometheus metrics and structured logs cover this; FastAPI's OpenTelemetry
        # hooks would otherwise look up global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.router.routes.append(CallbackRoute())
    routers = (jobs_router, streams_router, outputs_router, models_router, webhooks_router)
    for router in (*routers, estimates_router, usage_router, ops_router, ui_router):
        app.include_router(router)
    app.mount("/ui/static", static_assets(), name="ui-static")
    if simulator is not None:
        app.mount(SANDBOX_MOUNT_PATH, simulator)
    install_openapi(app)
    app.add_middleware(
        BodySizeLimit,
        default_limit=settings.api_max_body_bytes,
        limits={CALLBACK_PATH: settings.callback_max_body_bytes},
    )
    app.add_middleware(RequestContext, in_flight=in_flight, access_log_enabled=settings.access_log)
    return app


def __getattr__(name: str) -> FastAPI:
    # `uvicorn app.main:app` builds the app on first access, after the environment is read.
    if name == "app":
        try:
            application = create_app()
        except SettingsError as exc:
            # Invalid configuration: one line per problem and exit code 2, no traceback.
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2) from None
        globals()["app"] = application
        return application
    raise AttributeError(name)
