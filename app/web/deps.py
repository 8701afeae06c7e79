"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.models import Caller
from app.auth.service import authenticate
from app.errors import Unauthorized
from app.runtime import Runtime

bearer = HTTPBearer(auto_error=False, description="An API key from `poyo-relay keys create`.")

MAX_TOKEN_CHARS = 256


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


def _needs_key(dependant: Dependant) -> bool:
    return any(
        dependency.call is get_caller or _needs_key(dependency)
        for dependency in dependant.dependencies
    )


async def authentication_failure(request: Request) -> Unauthorized | None:
    """The 401 owed to a request refused before its dependencies ran, if any.

    FastAPI reads and parses a JSON body before it resolves dependencies, so a request
    with an unparseable body would otherwise be told about its body (400/422) without
    ever showing a key. Error handlers ask this first: on an endpoint that needs a key,
    an unauthenticated request learns nothing but `401`.
    """
    route: Any = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if not isinstance(dependant, Dependant) or not _needs_key(dependant):
        return None
    try:
        await get_caller(await get_runtime(request), await bearer(request))
    except Unauthorized as exc:
        return exc
    return None
