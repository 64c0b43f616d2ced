"""Alembic environment of the shared library's test service."""

from cef_common.db import run_migrations_online

run_migrations_online()
