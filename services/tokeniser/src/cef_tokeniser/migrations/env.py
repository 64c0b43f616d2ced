"""Alembic environment of the tokeniser service."""

from cef_common.db import run_migrations_online

run_migrations_online()
