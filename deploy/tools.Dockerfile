# syntax=docker/dockerfile:1
# The `cef` command with every service's code and migrations, for the one-shots of
# docker-compose.yml: keys-init (deploy/init_secrets.py) and the per-service migrations
# (`cef migrate --service <name>`). Build from the repository root:
#   docker build -f deploy/tools.Dockerfile -t cef-tools .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

COPY pyproject.toml uv.lock ./
COPY services/common/pyproject.toml services/common/
COPY services/tokeniser/pyproject.toml services/tokeniser/
COPY services/cef-api/pyproject.toml services/cef-api/
COPY services/audit/pyproject.toml services/audit/
COPY services/web/pyproject.toml services/web/
COPY cli/pyproject.toml cli/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package cef-cli

COPY services/common/src services/common/src
COPY services/tokeniser/src services/tokeniser/src
COPY services/cef-api/src services/cef-api/src
COPY services/audit/src services/audit/src
COPY services/web/src services/web/src
COPY cli/src cli/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package cef-cli

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 cef \
 && useradd --system --uid 10001 --gid cef --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin cef \
 && install -d -o cef -g cef -m 0750 /var/lib/cef
COPY --from=builder /app/.venv /app/.venv
COPY deploy/init_secrets.py /app/deploy/init_secrets.py
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /var/lib/cef
# keys-init overrides this with user 0 (it hands files to the postgres and service users).
USER 10001:10001
CMD ["cef", "--help"]
