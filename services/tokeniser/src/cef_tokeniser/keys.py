"""Master and data keys of the tokeniser: loading the master key, the key ring, rotation.

The master key lives outside the database (a file or an environment variable); it wraps the data
keys, which live in the database. A data key exists per (kind, context, version); rotation adds
a version that new tokens use, and every earlier version stays readable so old tokens resolve."""

from __future__ import annotations

import getpass
import os
import secrets
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Engine

from cef_common import db
from cef_common.audit import AuditOutbox, build_event
from cef_common.auth import Principal
from cef_tokeniser import repository
from cef_tokeniser.config import CONTEXT_PATTERN, Settings
from cef_tokeniser.crypto import KIND_LETTERS, DataKey, KeyUnavailable, MasterKey, new_data_key

ROTATION_ATTEMPTS = 5


class KeyStoreError(RuntimeError):
    """The keys cannot be used; the message says what to fix and never holds a key."""


class MasterKeyError(KeyStoreError):
    """The master key is missing or unusable."""


def ensure_dev_master_key(path: Path) -> bool:
    """Creates a random 256-bit development master key at `path` (0600); True when created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return True


def load_master_key(settings: Settings) -> MasterKey:
    """The master key from the settings (MASTER_KEY, else MASTER_KEY_FILE, else the development file)."""
    if settings.master_key is not None:
        try:
            return MasterKey.from_hex(settings.master_key.get_secret_value())
        except ValueError as exc:
            raise MasterKeyError(f"CEF_TOKENISER_MASTER_KEY: {exc}") from None
    path = settings.effective_master_key_file
    if path is None:
        raise MasterKeyError(
            "no master key: set CEF_TOKENISER_MASTER_KEY_FILE (or CEF_TOKENISER_MASTER_KEY) "
            "to a 256-bit key in hex"
        )
    if not path.is_file():
        raise MasterKeyError(
            f"the master key file {path} does not exist: `cef up` creates a development key there; "
            "elsewhere set CEF_TOKENISER_MASTER_KEY_FILE"
        )
    if settings.is_production and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise MasterKeyError(f"the master key file {path} is readable by other users: chmod 600 it")
    try:
        return MasterKey.from_hex(path.read_text(encoding="ascii", errors="replace"))
    except ValueError as exc:
        raise MasterKeyError(f"the master key file {path}: {exc}") from None


@dataclass(frozen=True)
class KeyVersionInfo:
    kind: str
    context: str
    version: int
    master_key_id: str
    created_at: datetime
    current: bool


class KeyRing:
    """Data keys by (kind, context, version), unwrapped on first use and kept in memory.

    Key rows never change once written, so a cached key stays right; which version is current is
    read from the database on every call, so a rotation by `cef keys rotate` takes effect at once."""

    def __init__(self, engine: Engine, master: MasterKey) -> None:
        self.engine = engine
        self.master = master
        self._keys: dict[tuple[str, str, int], DataKey] = {}
        self._lock = threading.Lock()

    def check_master_key(self) -> None:
        """Refuses a master key other than the one that wrapped the stored data keys."""
        with self.engine.connect() as conn:
            ids = repository.master_key_ids(conn)
        others = sorted(ids - {self.master.key_id})
        if others:
            raise MasterKeyError(
                f"the tokeniser's data keys were wrapped by master key {', '.join(others)}, "
                f"but the configured master key is {self.master.key_id}: configure the master key "
                "this database was created with"
            )

    def get(self, kind: str, context: str, version: int) -> DataKey | None:
        """The key of one version, or None when that version does not exist."""
        cached = self._keys.get((kind, context, version))
        if cached is not None:
            return cached
        with self.engine.connect() as conn:
            found = repository.wrapped_key(conn, kind, context, version)
        if found is None:
            return None
        wrapped, master_key_id = found
        if master_key_id != self.master.key_id:
            raise KeyUnavailable(
                f"the data key {kind}/{context}/v{version} was wrapped by master key {master_key_id}, "
                f"not by the configured {self.master.key_id}"
            )
        key = DataKey.from_bytes(
            self.master.unwrap(wrapped, kind=kind, context=context, version=version),
            kind=kind,
            context=context,
            version=version,
        )
        with self._lock:
            self._keys[(kind, context, version)] = key
        return key

    def current_version(self, kind: str, context: str) -> int | None:
        with self.engine.connect() as conn:
            return repository.current_version(conn, kind, context)

    def current(self, kind: str, context: str, *, actor: Principal | None = None) -> DataKey:
        """The key new tokens use; a (kind, context) used for the first time gets version 1."""
        version = self.current_version(kind, context)
        if version is None:
            self._add_version(kind, context, 1, ignore_existing=True, actor=actor)
            version = self.current_version(kind, context) or 1
        key = self.get(kind, context, version)
        if key is None:  # pragma: no cover - a version just read cannot vanish: rows are never deleted
            raise KeyUnavailable(f"the data key {kind}/{context}/v{version} is missing")
        return key

    def _add_version(
        self, kind: str, context: str, version: int, *, ignore_existing: bool, actor: Principal | None = None
    ) -> bool:
        wrapped = self.master.wrap(new_data_key(), kind=kind, context=context, version=version)
        with self.engine.begin() as conn:
            added = repository.add_key_version(
                conn,
                kind=kind,
                context=context,
                version=version,
                wrapped=wrapped,
                master_key_id=self.master.key_id,
                created_at=datetime.now(UTC),
                ignore_existing=ignore_existing,
            )
            if added:
                _record_key_event(conn, actor, kind=kind, context=context, version=version)
        return added

    def rotate(self, kind: str, context: str, *, actor: Principal | None = None) -> int:
        """Adds the next key version of (kind, context) and returns it; new tokens use it from now."""
        for _ in range(ROTATION_ATTEMPTS):
            version = (self.current_version(kind, context) or 0) + 1
            try:
                self._add_version(kind, context, version, ignore_existing=False, actor=actor)
                return version
            except sa.exc.IntegrityError:
                continue  # another rotation took this number meanwhile: take the next
        raise KeyUnavailable(
            f"could not add a key version for {kind}/{context}: too many concurrent rotations"
        )

    def versions(self) -> list[KeyVersionInfo]:
        with self.engine.connect() as conn:
            rows = repository.key_versions(conn)
        latest: dict[tuple[str, str], int] = {}
        for r in rows:
            latest[(r.kind, r.context)] = max(latest.get((r.kind, r.context), 0), r.version)
        return [
            KeyVersionInfo(
                kind=r.kind,
                context=r.context,
                version=r.version,
                master_key_id=r.master_key_id,
                created_at=r.created_at,
                current=latest[(r.kind, r.context)] == r.version,
            )
            for r in rows
        ]


_OUTBOX: sa.Table = AuditOutbox.__table__  # type: ignore[attr-defined]


def _record_key_event(
    conn: sa.Connection, actor: Principal | None, *, kind: str, context: str, version: int
) -> None:
    """A key version added is an audit event, written with the key in one transaction."""
    event = build_event(
        source="tokeniser",
        action="create",
        type="key.rotate" if version > 1 else "key.create",
        outcome="success",
        principal=actor
        or Principal(sub="tokeniser", issuer="tokeniser", scopes=frozenset(), client="tokeniser"),
        entity_type="data_key",
        entity_id=f"{kind}/{context}/v{version}",
        detail={"kind": kind, "context": context, "key_version": version},
    )
    conn.execute(
        sa.insert(_OUTBOX),
        {
            "event_id": str(event.event_id),
            "payload": event.model_dump_json(),
            "created_at": datetime.now(UTC),
        },
    )


# --- operations for `cef keys`, directly on the tokeniser's database ------------------------------


def _operator() -> Principal:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return Principal(sub=user, issuer="local", scopes=frozenset(), client="cef-cli")


def open_key_ring(settings: Settings) -> KeyRing:
    """A key ring on the tokeniser's database, refusing a database that is not migrated to head."""
    from cef_tokeniser.main import MIGRATIONS

    master = load_master_key(settings)
    engine = db.make_engine(settings.effective_database_url)
    head = db.head_revision(MIGRATIONS)
    current = db.current_revision(engine)
    if current != head:
        engine.dispose()
        raise KeyStoreError(
            f"the tokeniser database is at revision {current}, not {head}: "
            "run `cef migrate` (or `cef up`) first"
        )
    ring = KeyRing(engine, master)
    ring.check_master_key()
    return ring


def rotate_data_key(settings: Settings, *, kind: str, context: str | None = None) -> KeyVersionInfo:
    """Adds a key version for (kind, context) and returns it (the CLI's `cef keys rotate`)."""
    ctx = context or settings.default_context
    if kind not in KIND_LETTERS:
        raise KeyStoreError(f"kind must be one of {', '.join(KIND_LETTERS)}, not {kind!r}")
    if not CONTEXT_PATTERN.match(ctx):
        raise KeyStoreError(f"{ctx!r} is not a context name: lower-case letters, digits, '.', '_' or '-'")
    ring = open_key_ring(settings)
    try:
        version = ring.rotate(kind, ctx, actor=_operator())
        return next(v for v in ring.versions() if (v.kind, v.context, v.version) == (kind, ctx, version))
    finally:
        ring.engine.dispose()


def list_data_keys(settings: Settings) -> list[KeyVersionInfo]:
    ring = open_key_ring(settings)
    try:
        return ring.versions()
    finally:
        ring.engine.dispose()
