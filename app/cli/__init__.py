"""`poyo-relay`: serve, worker, migrate, sandbox, config, prune (service), keys, submit and
jobs (the API), models, catalog, archive, webhooks (the API) and status.

Exit codes: 0 success, 1 the job (or operation) failed, 2 usage or configuration error.
"""

from app.cli import (  # each registers its commands
    archive,
    catalog,
    jobs,
    keys,
    models,
    service,
    status,
    webhooks,
)
from app.cli.base import cli, main
from app.cli.service import parse_age

__all__ = [
    "archive",
    "catalog",
    "cli",
    "jobs",
    "keys",
    "main",
    "models",
    "parse_age",
    "service",
    "status",
    "webhooks",
]
