"""Alembic environment of the cef-api service."""

from cef_common.db import run_migrations_online

run_migrations_online()
