"""Alembic environment of the web app."""

from cef_common.db import run_migrations_online

run_migrations_online()
