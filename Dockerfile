# syntax=docker/dockerfile:1
# poyo-relay: one image for the API (default), the worker, migrations and the simulator:
#   docker run IMAGE                          -> poyo-relay serve --host 0.0.0.0 --port 8000
#   docker run IMAGE poyo-relay worker        -> the background worker alone
#   docker run IMAGE poyo-relay migrate       -> alembic upgrade head on DATABASE_URL
#   docker run IMAGE poyo-relay sandbox ...   -> the PoYo simulator
# docker-compose.yml wires them to PostgreSQL.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: a virtualenv with the project and its dependencies, installed from a wheel
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY poyo_relay ./poyo_relay
RUN /opt/venv/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-cache-dir /tmp/wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---- runtime: the virtualenv, alembic.ini and migrations; no compilers, pip or caches
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="poyo-relay" \
      org.opencontainers.image.description="A durable broker for asynchronous AI video generation jobs (PoYo AI)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite+aiosqlite:////app/data/poyo_relay.db \
    LOG_FORMAT=json
RUN groupadd --system --gid 10001 relay \
    && useradd --system --uid 10001 --gid relay --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin relay \
    && rm -rf /root/.cache
WORKDIR /app
COPY --from=builder /opt/venv /opt/venv
# `poyo-relay migrate` finds alembic.ini and migrations/ in the working directory.
COPY alembic.ini ./
COPY migrations ./migrations
# SQLite (the default without DATABASE_URL) and archived outputs (ARCHIVE_DIR, data/outputs)
# live here; a named volume mounted on data/outputs takes this owner.
RUN mkdir -p /app/data/outputs && chown -R relay:relay /app/data
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
CMD ["poyo-relay", "serve", "--host", "0.0.0.0", "--port", "8000"]
