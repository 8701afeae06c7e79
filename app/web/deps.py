"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.models import Caller
from app.auth.service import authenticate
from app.errors import AppError, Forbidden, Unauthorized
from app.runtime import Runtime

bearer = HTTPBearer(auto_error=False, description="An API key from `poyo-relay keys create`.")

MAX_TOKEN_CHARS = 256
# A signed link's `expires`: unix seconds, as the output route's query allows (< 10**12).
MAX_EXPIRES_DIGITS = 12


async def get_runtime(request: Request) -> Runtime:
    # async: FastAPI would run a plain function in a worker thread, on every request.
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_caller(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    token = credentials.credentials
    caller = await authenticate(runtime.db, token) if len(token) <= MAX_TOKEN_CHARS else None
    if caller is None:
        raise Unauthorized()
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_output_reader(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """Who may read an output: the API key's caller, or, with a signed link
    (`?expires=…&sig=…`), anyone, for the one output of the one job the link names."""
    query = request.query_params
    if "sig" not in query and "expires" not in query:
        return await get_caller(runtime, credentials)
    job_id = str(request.path_params.get("job_id", ""))
    index, expires = str(request.path_params.get("index", "")), query.get("expires", "")
    signature = query.get("sig", "")
    if not (index.isdigit() and expires.isdigit() and len(expires) <= MAX_EXPIRES_DIGITS):
        raise Forbidden("this link is invalid or has expired")
    links = runtime.output_links
    if not links.verify(job_id, int(index), int(expires), signature, time.time()):
        raise Forbidden("this link is invalid or has expired")
    return Caller(owner="", is_admin=True)  # the link names one output of one job


OutputReaderDep = Annotated[Caller, Depends(get_output_reader)]


def _authenticator(dependant: Dependant) -> Any:
    """The dependency that authenticates this route (get_caller or get_output_reader),
    found however deep it is declared, or None for a route open to all."""
    for dependency in dependant.dependencies:
        if dependency.call in (get_caller, get_output_reader):
            return dependency.call
        found = _authenticator(dependency)
        if found is not None:
            return found
    return None


async def authentication_failure(request: Request) -> AppError | None:
    """The 401 owed to a request refused before its dependencies ran, if any.

    FastAPI reads and parses a JSON body before it resolves dependencies, so a request
    with an unparseable body would otherwise be told about its body (400/422) without
    ever showing a key. Error handlers ask this first: on an endpoint that needs a key,
    an unauthenticated request learns nothing but `401`.
    """
    route: Any = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    authenticate = _authenticator(dependant) if isinstance(dependant, Dependant) else None
    if authenticate is None:
        return None
    runtime, credentials = await get_runtime(request), await bearer(request)
    try:
        if authenticate is get_output_reader:
            await get_output_reader(request, runtime, credentials)
        else:
            await get_caller(runtime, credentials)
    except (Unauthorized, Forbidden) as exc:
        return exc
    return None
