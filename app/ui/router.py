"""The dashboard at /ui: server-rendered pages (app/ui/templates) with a little JavaScript of
our own (app/ui/static/ui.js) for live updates and the estimate.

Signing in with an API key makes a session (app/auth/sessions.py) kept in an HttpOnly,
SameSite=Strict cookie. Every form post carries the session's CSRF token and must come from
this origin. Tenancy is the API's: a page shows what the key's owner may see.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Annotated, Any

from fastapi import APIRouter, Cookie, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.responses import StreamingResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from app.auth import sessions
from app.auth.sessions import Session
from app.catalog.compiled import Catalog
from app.errors import AppError, BudgetExceeded, InvalidRequest, NotFound
from app.jobs import queries
from app.jobs.models import JobRecord, read_output
from app.jobs.schemas import JobCreate, job_to_dict
from app.jobs.states import JobStatus
from app.timeutil import isoformat_z
from app.ui import forms
from app.ui.overview import Overview
from app.ui.pages import SECURITY_HEADERS, STATIC_DIR, render
from app.web.deps import RuntimeDep

router = APIRouter(prefix="/ui", include_in_schema=False)

COOKIE = "poyo_relay_session"
PAGE_SIZE = 50
EVENTS_PAGE = 100
OUTPUT_LINK_SECONDS = 3600
MAX_FORM_FIELDS = 200

SessionCookie = Annotated[str | None, Cookie(alias=COOKIE, max_length=128)]
JobId = Annotated[str, Path(max_length=40)]


class SignInNeeded(Exception):
    """Raised by a page that needs a session when there is none."""


# ---- helpers -------------------------------------------------------------------------------


def page(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(render(template, **context), status_code, headers=SECURITY_HEADERS)


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


async def signed_in(runtime: RuntimeDep, token: str | None) -> Session | None:
    return await sessions.current(runtime.db, token)


def same_origin(request: Request) -> bool:
    """A form post from one of our pages: the browser says where it comes from."""
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.url.netloc}"
        return origin == own
    return request.headers.get("sec-fetch-site") in ("same-origin", None)


def forbidden(message: str) -> HTMLResponse:
    return page("error.html", 403, title="Forbidden", message=message, session=None)


def _https(request: Request, public_base_url: str) -> bool:
    """Secure cookies behind https: this request's, or the public URL's behind a proxy."""
    return request.url.scheme == "https" or public_base_url.startswith("https://")


def _job_url(job_id: str) -> str:
    return f"/ui/jobs/{job_id}"


# ---- signing in and out ------------------------------------------------------------------


@router.post("/login")
async def login(
    request: Request,
    runtime: RuntimeDep,
    api_key: Annotated[str, Form(max_length=256)] = "",
) -> Response:
    if not same_origin(request):
        return forbidden("this form must be sent from poyo-relay's own sign-in page")
    lifetime = timedelta(seconds=runtime.settings.ui_session_seconds)
    made = await sessions.sign_in(runtime.db, api_key.strip(), lifetime)
    if made is None:
        return page("login.html", 401, session=None, error="That is not a valid API key.")
    token, _ = made
    response = see_other("/ui")
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(lifetime.total_seconds()),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https"
        or runtime.settings.public_base_url.startswith("https"),
    )
    return response


@router.post("/logout")
async def logout(
    request: Request,
    runtime: RuntimeDep,
    token: SessionCookie = None,
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    session = await signed_in(runtime, token)
    if session is not None and (not same_origin(request) or not session.csrf_ok(csrf_token)):
        return forbidden("sign out from poyo-relay's own pages")
    await sessions.sign_out(runtime.db, token)
    response = see_other("/ui")
    response.delete_cookie(COOKIE, path="/ui")
    return response


# ---- the job list ------------------------------------------------------------------------


def _day(value: str | None, end: bool = False) -> datetime | None:
    if not value:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        return None
    moment = datetime.combine(day, clock.min, tzinfo=UTC)
    return moment + timedelta(days=1) if end else moment


@router.get("", response_class=HTMLResponse)
async def jobs_page(
    runtime: RuntimeDep,
    token: SessionCookie = None,
    status: Annotated[str, Query(max_length=16)] = "",
    model: Annotated[str, Query(max_length=64)] = "",
    category: Annotated[str, Query(max_length=32)] = "",
    created_after: Annotated[str, Query(max_length=10)] = "",
    created_before: Annotated[str, Query(max_length=10)] = "",
    cursor: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    session = await signed_in(runtime, token)
    if session is None:
        return page("login.html", session=None, error=None)
    catalog = await runtime.catalogs.current()
    categories = sorted({spec.entry.category for spec in catalog.models.values()})
    statuses = [s.value for s in JobStatus]
    chosen_status = JobStatus(status) if status in statuses else None
    in_category = (
        tuple(sorted(s.id for s in catalog.search(category=category)))
        if category in categories
        else None
    )
    filters = queries.JobFilter(
        chosen_status,
        model or None,
        _day(created_after),
        _day(created_before, end=True),
        in_category,
    )
    try:
        jobs, next_cursor = await queries.list_jobs(
            runtime.db, caller=session.caller, filters=filters, limit=PAGE_SIZE, cursor=cursor
        )
    except InvalidRequest:
        jobs, next_cursor = [], None
    query = {
        "status": chosen_status.value if chosen_status else "",
        "model": model,
        "category": category if in_category is not None else "",
        "created_after": created_after,
        "created_before": created_before,
    }
    return page(
        "jobs.html",
        session=session,
        jobs=[job_to_dict(job) for job in jobs],
        next_cursor=next_cursor,
        first_page=cursor is None,
        query=query,
        statuses=statuses,
        categories=categories,
        models=sorted(catalog.models),
        category_models=",".join(in_category or ()),
        now=datetime.now(UTC),
    )


@router.get("/stream")
async def stream(
    runtime: RuntimeDep,
    token: SessionCookie = None,
    status: Annotated[str, Query(max_length=16)] = "",
    model: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Every change of the signed-in owner's jobs, for the live job list (EventSource)."""
    session = await signed_in(runtime, token)
    if session is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    runtime.feed.admit()
    chosen = JobStatus(status) if status in {s.value for s in JobStatus} else None
    body = runtime.streams.all_stream(
        session.caller, status=chosen, model=model or None, last_event_id=None
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# ---- one job -----------------------------------------------------------------------------


def _outputs(runtime: RuntimeDep, job: JobRecord) -> list[dict[str, Any]]:
    """Each output with where the browser fetches it: our own archived copy through a
    signed link (the page has no API key), or PoYo's URL, not embedded."""
    shown = []
    expires = int(time.time()) + OUTPUT_LINK_SECONDS
    for index, stored in enumerate(job.outputs or []):
        output = read_output(stored)
        archived = output.get("archived_at") is not None
        src = None
        if archived:
            signature = runtime.output_links.signature(job.id, index, expires)
            src = f"/v1/jobs/{job.id}/outputs/{index}?expires={expires}&sig={signature}"
        kind = (output.get("content_type") or output.get("type") or "").split("/")[0]
        shown.append({"output": output, "src": src, "kind": kind, "index": index})
    return shown


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    runtime: RuntimeDep,
    job_id: JobId,
    token: SessionCookie = None,
    events: Annotated[str | None, Query(max_length=64)] = None,
    notice: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    session = await signed_in(runtime, token)
    if session is None:
        return page("login.html", session=None, error=None)
    try:
        job = await queries.get_job(runtime.db, caller=session.caller, job_id=job_id)
        trail, next_events = await queries.list_events(
            runtime.db, caller=session.caller, job_id=job_id, limit=EVENTS_PAGE, cursor=events
        )
    except (NotFound, InvalidRequest):
        return page("error.html", 404, title="Not found", message="No such job.", session=session)
    messages = await runtime.webhook_endpoints.messages(session.caller, job_id=job_id, limit=200)
    event_rows = [
        {"id": e.id, "type": e.type, "created_at": isoformat_z(e.created_at), "data": e.data}
        for e in trail
    ]
    return page(
        "job.html",
        session=session,
        job=job_to_dict(job),
        outputs=_outputs(runtime, job),
        events=event_rows,
        callbacks=[e for e in event_rows if e["type"] == "callback.received"],
        next_events=next_events,
        messages=messages.data,
        notice=notice,
    )


@router.post("/jobs/{job_id}/webhooks/{message_id}/redeliver")
async def redeliver(
    request: Request,
    runtime: RuntimeDep,
    job_id: JobId,
    message_id: Annotated[str, Path(max_length=40)],
    token: SessionCookie = None,
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    session = await signed_in(runtime, token)
    if session is None:
        return see_other("/ui")
    if not same_origin(request) or not session.csrf_ok(csrf_token):
        return forbidden("the form expired: reload the page and try again")
    try:
        await runtime.webhook_endpoints.redeliver(session.caller, message_id, None)
    except AppError as exc:
        return page(
            "error.html", exc.status_code, title="Not sent", message=exc.message, session=session
        )
    return see_other(f"{_job_url(job_id)}?notice=redelivered")


# ---- a new job ---------------------------------------------------------------------------


def _new_context(
    catalog: Catalog, model: str, values: dict[str, str], errors: dict[str, list[str]]
) -> dict[str, Any]:
    spec = catalog.models.get(model)
    by_category: dict[str, list[tuple[str, str]]] = {}
    for candidate in sorted(catalog.models.values(), key=lambda s: (s.entry.category, s.id)):
        by_category.setdefault(candidate.entry.category, []).append(
            (candidate.id, candidate.entry.title or candidate.id)
        )
    fields = forms.form_fields(spec.schema) if spec is not None else []
    if spec is not None and not values:
        values = {field.name: field.default for field in fields}
    return {
        "model": model if spec is not None else "",
        "spec": spec,
        "by_category": by_category,
        "fields": fields,
        "values": values,
        "errors": errors,
    }


@router.get("/new", response_class=HTMLResponse)
async def new_page(
    runtime: RuntimeDep,
    token: SessionCookie = None,
    model: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    session = await signed_in(runtime, token)
    if session is None:
        return page("login.html", session=None, error=None)
    catalog = await runtime.catalogs.current()
    return page("new.html", session=session, **_new_context(catalog, model, {}, {}))


async def _form_values(request: Request) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    return {key: value for key, value in form.items() if isinstance(value, str)}


@router.post("/new")
async def create(request: Request, runtime: RuntimeDep, token: SessionCookie = None) -> Response:
    session = await signed_in(runtime, token)
    if session is None:
        return see_other("/ui")
    values = await _form_values(request)
    if not same_origin(request) or not session.csrf_ok(values.get("csrf_token")):
        return forbidden("the form expired: reload the page and try again")
    catalog = await runtime.catalogs.current()
    model = values.get("model", "")
    context = _new_context(catalog, model, values, {})
    if context["spec"] is None:
        context["errors"] = {"": [f"unknown model {model!r}"]}
        return page("new.html", 422, session=session, **context)
    job_input, problems = forms.parse_form(context["fields"], values)
    if problems:
        context["errors"] = {name: [message] for name, message in problems.items()}
        return page("new.html", 422, session=session, **context)
    try:
        body = JobCreate(model=model, input=job_input)
        job, _ = await runtime.jobs.create(caller=session.caller, body=body, idempotency_key=None)
    except InvalidRequest as exc:
        context["errors"] = forms.field_errors(exc.details or [])
        if not context["errors"]:
            context["errors"] = {"": [exc.message]}
        return page("new.html", 422, session=session, **context)
    except ValidationError as exc:
        context["errors"] = {"": [str(error["msg"]) for error in exc.errors()]}
        return page("new.html", 422, session=session, **context)
    except BudgetExceeded as exc:
        context["errors"] = {"": [exc.message]}
        return page("new.html", 402, session=session, **context)
    return see_other(_job_url(job.id))


@router.post("/estimate")
async def estimate(request: Request, runtime: RuntimeDep, token: SessionCookie = None) -> Response:
    """What the new-job form would cost as filled in so far (the page's script asks as the
    user types); its problems by field when it is not valid yet."""
    session = await signed_in(runtime, token)
    if session is None:
        return JSONResponse({"error": "sign in first"}, status_code=401)
    values = await _form_values(request)
    if not same_origin(request) or not session.csrf_ok(values.get("csrf_token")):
        return JSONResponse({"error": "forbidden"}, status_code=403)
    catalog = await runtime.catalogs.current()
    spec = catalog.models.get(values.get("model", ""))
    if spec is None:
        return JSONResponse({"error": "unknown model"}, status_code=422)
    job_input, problems = forms.parse_form(forms.form_fields(spec.schema), values)
    if problems:
        return JSONResponse({"credits": None, "errors": problems})
    try:
        _, cost = await runtime.jobs.estimate(JobCreate(model=spec.id, input=job_input))
    except InvalidRequest as exc:
        errors = {k: "; ".join(v) for k, v in forms.field_errors(exc.details or []).items()}
        return JSONResponse({"credits": None, "errors": errors})
    return JSONResponse(
        {"credits": cost.credits, "usd": cost.usd, "reason": cost.reason, "errors": {}}
    )


# ---- the overview ------------------------------------------------------------------------


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(runtime: RuntimeDep, token: SessionCookie = None) -> Response:
    session = await signed_in(runtime, token)
    if session is None:
        return page("login.html", session=None, error=None)
    overview = await Overview(runtime.db).read(session.caller)
    return page("overview.html", session=session, overview=overview)


class StaticAssets(StaticFiles):
    """The dashboard's own CSS and JavaScript, with the pages' security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"  # revalidated: a new version shows at once
        return response


def static_assets() -> StaticAssets:
    return StaticAssets(directory=str(STATIC_DIR))
