"""Request and response bodies of the reference endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class LoadOut(BaseModel):
    dataset: str
    rows: int
    version: int
    key_version: int | None = None


class DatasetOut(BaseModel):
    dataset: str
    version: int
    rows: int
    key_version: int | None
    dob_key_version: int | None
    loaded_at: datetime
    loaded_by: str


class DatasetsOut(BaseModel):
    items: list[DatasetOut]
