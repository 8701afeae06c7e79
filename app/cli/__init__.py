"""`poyo-relay`: serve, worker, migrate, sandbox, config, prune (service), keys, submit and
jobs (the API), models, catalog and archive.

Exit codes: 0 success, 1 the job (or operation) failed, 2 usage or configuration error.
"""

from app.cli import archive, catalog, jobs, keys, models, service  # each registers its commands
from app.cli.base import cli, main
from app.cli.service import parse_age

__all__ = ["archive", "catalog", "cli", "jobs", "keys", "main", "models", "parse_age", "service"]
