"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.service import authenticate
from app.errors import Unauthorized
from app.jobs.service import Caller
from app.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="An API key from `poyo-relay keys create`.")

MAX_TOKEN_CHARS = 256


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_caller(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("an API key is required: Authorization: Bearer <key>")
    token = credentials.credentials
    caller = await authenticate(runtime.db, token) if len(token) <= MAX_TOKEN_CHARS else None
    if caller is None:
        raise Unauthorized("invalid or revoked API key")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
