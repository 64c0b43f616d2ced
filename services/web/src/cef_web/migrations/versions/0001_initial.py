"""sessions and the audit outbox

Revision ID: 0001
Revises:
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from cef_common.audit import outbox_table_ddl

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("audit_outbox", *outbox_table_ddl())
    op.create_table(
        "web_session",
        # SHA-256 of the cookie's session id: reading the table does not give a usable cookie.
        sa.Column("id_hash", sa.String(64), primary_key=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        # Signed in: who, for which organisation, with which scopes, from which issuer.
        sa.Column("sub", sa.String(200), nullable=True),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("org", sa.String(20), nullable=True),
        sa.Column("scopes", sa.String(1000), nullable=True),
        sa.Column("issuer", sa.String(500), nullable=True),
        # The identity provider's tokens (AES-GCM under a key derived from the web app's own
        # key): kept on the server, never sent to the browser.
        sa.Column("tokens", sa.LargeBinary(), nullable=True),
        # Sign-in in progress (OIDC state, nonce and PKCE verifier), and a flash message; JSON.
        sa.Column("pending", sa.Text(), nullable=True),
    )
    op.create_index("ix_web_session_expires_at", "web_session", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_web_session_expires_at", table_name="web_session")
    op.drop_table("web_session")
    op.drop_table("audit_outbox")
