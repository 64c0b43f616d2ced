"""Settings of the cef-api service (environment variables prefixed CEF_API_)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from cef_common.settings import BaseServiceSettings

MIB = 1024 * 1024


class Settings(BaseServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CEF_API_", env_file=".env", extra="ignore")

    service_name: str = "cef-api"
    port: int = 8002
    audit_url: str = "http://127.0.0.1:8003"
    tokeniser_url: str = "http://127.0.0.1:8001"

    # On start, when no reference data has ever been loaded, every reference file found here is
    # loaded through the same functions as PUT /v1/reference (`cef up` points it at demo/reference).
    seed_reference_dir: Path | None = None
    # How long start-up keeps retrying the tokeniser while seeding before giving up.
    seed_tokeniser_wait_seconds: float = Field(default=60.0, ge=0)

    # A 1,000,000-line backing file is about 110 MB; the limit leaves room for longer lines.
    max_invoice_bytes: int = Field(default=200 * MIB, ge=1024)
    # The real epraccur.csv is ~3 MB; patient traces and registrations of a large world are bigger.
    max_reference_bytes: int = Field(default=300 * MIB, ge=1024)
    # Backing data over this size is validated in the background: the request returns 202.
    async_threshold_bytes: int = Field(default=4 * MIB, ge=0)
    # How long a synchronous submission waits for an earlier invoice of the same provider and
    # commissioner to finish validating before it hands its own over to the background worker.
    sync_wait_seconds: float = Field(default=20.0, ge=0)

    # Lines handled together: one tokeniser call per kind, one reference prefetch, one bulk insert.
    # 50,000 keeps the service and its worker processes under 1 GB on a million-line invoice while
    # the throughput is that of 100,000 (measured: docs/cef-api.md).
    validation_batch_lines: int = Field(default=50_000, ge=1)
    # Worker processes that assess the batches of background validations side by side (0: in the
    # service process; unset: one per CPU this process may use, at most 4). Each holds its own copy
    # of the reference snapshot while it is in use.
    validation_processes: int | None = Field(default=None, ge=0, le=64)
    # A patient trace and registrations up to this many rows in all are read into memory once per
    # validation job; bigger ones are read per batch, for the batch's patients only.
    reference_memory_rows: int = Field(default=1_000_000, ge=0)
    # Values per tokeniser call (the tokeniser is built for batches of at least 100,000).
    tokenise_batch_size: int = Field(default=200_000, ge=1)
    tokeniser_read_timeout: float = Field(default=300.0, gt=0)

    # Line-level patient tokens of closed invoices older than this are removed (None: never).
    retention_days: int | None = Field(default=None, ge=0)
    # How often the service itself applies `retention_days` (seconds; 0 disables the timer).
    retention_interval_seconds: float = Field(default=86_400.0, ge=0)

    # Re-identifications one person (issuer + sub) may make in any 24 hours (a rolling window), across
    # every process of the service: counted in the database. 0 refuses them all.
    reidentify_daily_limit: int = Field(default=50, ge=0)

    # Days a provider has to answer a challenge on a query line, when staff give no due date.
    challenge_due_days: int = Field(default=20, ge=1, le=365)

    # Background validation worker (for the 202 path); false only in tests that drive it by hand.
    worker_enabled: bool = True

    # The runner of background validations (docs/queue.md): "auto" is procrastinate when the
    # database is PostgreSQL and the in-process runner on SQLite.
    queue_runner: Literal["auto", "in-process", "procrastinate"] = "auto"
    # The key-encryption key (256 bits in hex) wrapping each invoice's data key of its queued backing
    # data: inline, or a file; outside production a development key is made under DATA_DIR/keys.
    queue_key: SecretStr | None = None
    queue_key_file: Path | None = None
    # Earlier key-encryption keys (files), still read to unwrap data keys stored before a rotation.
    queue_previous_key_files: list[Path] = Field(default_factory=list)
    # Whether this API process also runs a procrastinate worker (so `cef up` on PostgreSQL needs
    # no separate `cef worker`).
    queue_embedded_worker: bool = True
    # Validation jobs one worker node runs at once.
    queue_worker_concurrency: int = Field(default=1, ge=1, le=32)
    # A worker's heartbeat interval, and how long without one before its running job counts as
    # stalled (its node died) and is retried by another node.
    queue_heartbeat_seconds: float = Field(default=10.0, gt=0)
    queue_stalled_seconds: float = Field(default=30.0, gt=0)
    # How often a worker node looks for stalled jobs.
    queue_recovery_interval_seconds: float = Field(default=10.0, gt=0)
    # How long a job whose invoice must wait for an earlier one of its commissioner waits before
    # it is tried again.
    queue_order_retry_seconds: int = Field(default=1, ge=0)
    # Crash restarts of one invoice's job before the invoice is failed.
    queue_max_restarts: int = Field(default=3, ge=0)

    @property
    def effective_validation_processes(self) -> int:
        if self.validation_processes is not None:
            return self.validation_processes
        return max(1, min(4, len(os.sched_getaffinity(0))))
