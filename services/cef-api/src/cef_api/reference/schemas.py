"""Request and response bodies of the reference endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from cef_common.openapi import model_examples


class LoadOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "dataset": "patients",
                    "rows": 1200,
                    "version": 3,
                    "key_version": 1,
                    "added": 24,
                    "kept": 1176,
                    "retired": 21,
                }
            ]
        )
    )

    dataset: str
    rows: int  # in force in the new version
    version: int
    key_version: int | None = None
    # What the load changed: rows read from new records, rows of the version before that stand as
    # they were (a reload recognises their records), and rows of the version before it took out.
    added: int
    kept: int
    retired: int


class DatasetOut(BaseModel):
    dataset: str
    version: int
    rows: int
    key_version: int | None
    dob_key_version: int | None
    loaded_at: datetime
    loaded_by: str


class DatasetsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra=model_examples(
            [
                {
                    "items": [
                        {
                            "dataset": "gp-practices",
                            "version": 2,
                            "rows": 7450,
                            "key_version": None,
                            "dob_key_version": None,
                            "loaded_at": "2026-11-20T08:15:00Z",
                            "loaded_by": "cef-admin-01",
                        },
                        {
                            "dataset": "patients",
                            "version": 3,
                            "rows": 1200,
                            "key_version": 1,
                            "dob_key_version": 1,
                            "loaded_at": "2026-11-20T08:16:00Z",
                            "loaded_by": "cef-admin-01",
                        },
                    ]
                }
            ]
        )
    )

    items: list[DatasetOut]
