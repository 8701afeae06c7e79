"""The HTTP edge: dependencies, error handlers, middleware and the OpenAPI document.
It imports downward only; routers (one per domain) import it."""
