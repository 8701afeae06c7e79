"""JSON answers serialised with orjson: the routers return these directly, skipping
FastAPI's response-model serialisation on the hot paths (the OpenAPI document still
states each route's `response_model`)."""

from __future__ import annotations

import orjson
from starlette.responses import Response


def json_response(content: object, status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")
