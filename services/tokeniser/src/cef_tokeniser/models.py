"""Tables of the tokeniser: wrapped data keys and the sealed originals of issued tokens."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


class DataKeyRow(SQLModel, table=True):
    """One version of the data key of a (kind, context), wrapped by the master key."""

    __tablename__ = "data_key"
    __table_args__ = (
        sa.UniqueConstraint("kind", "context", "version", name="uq_data_key_kind_context_version"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=20)
    context: str = Field(max_length=64)
    version: int
    wrapped_key: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
    master_key_id: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


class TokenOriginal(SQLModel, table=True):
    """The original of an issued token, sealed with AES-GCM under that token's data key.

    The token names its kind and key version; the columns repeat them for queries by version."""

    __tablename__ = "token_original"

    context: str = Field(max_length=64, primary_key=True)
    token: str = Field(max_length=64, primary_key=True)
    kind: str = Field(max_length=20)
    key_version: int
    sealed: bytes = Field(sa_column=sa.Column(sa.LargeBinary(), nullable=False))
