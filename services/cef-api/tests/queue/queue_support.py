"""Settings of the queue tests: each runner on its own database kind, with short waits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api_support import api_settings

from cef_api.config import Settings

RUNNERS = {"in-process": "sqlite", "procrastinate": "postgresql"}

# Quick heartbeats and recovery so a crash is noticed within seconds in tests.
FAST_QUEUE = {
    "async_threshold_bytes": 10,
    "validation_batch_lines": 7,
    "queue_heartbeat_seconds": 0.5,
    "queue_stalled_seconds": 2.0,
    "queue_recovery_interval_seconds": 0.5,
    "queue_order_retry_seconds": 0,
}


def queue_settings(data_dir: Path, database_url: str, tokeniser_url: str, **overrides: Any) -> Settings:
    return api_settings(data_dir, database_url, tokeniser_url, **{**FAST_QUEUE, **overrides})
