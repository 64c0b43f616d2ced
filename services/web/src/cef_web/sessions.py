"""Server-side sessions: the browser holds only a random session id; everything else is here.

The table stores a SHA-256 of the id, never the id itself. Signing in replaces the session (a new
id: no fixation), signing out deletes it, and a session ends after `session_idle_minutes` unused
or `session_max_hours` after it began. The identity provider's tokens are sealed with AES-GCM under
a key derived from the web app's own signing key."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Engine

COOKIE = "cef_session"
# The cookie's name where it must be sent over HTTPS only: browsers refuse a `__Host-` cookie that
# is not Secure, host-only and for path /.
SECURE_COOKIE = "__Host-cef_session"

metadata = sa.MetaData()
web_session = sa.Table(
    "web_session",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("csrf_token", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sub", sa.String(200)),
    sa.Column("name", sa.String(200)),
    sa.Column("org", sa.String(20)),
    sa.Column("scopes", sa.String(1000)),
    sa.Column("issuer", sa.String(500)),
    sa.Column("tokens", sa.LargeBinary()),
    sa.Column("pending", sa.Text()),
)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time here is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass
class WebSession:
    """One browser's session, as read at the start of a request."""

    id: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime
    sub: str | None = None
    name: str | None = None
    org: str | None = None
    scopes: frozenset[str] = frozenset()
    issuer: str | None = None
    pending: dict[str, Any] = field(default_factory=dict)

    @property
    def signed_in(self) -> bool:
        return self.sub is not None


class SessionStore:
    def __init__(self, engine: Engine, *, secret: bytes, idle: timedelta, lifetime: timedelta) -> None:
        self.engine = engine
        self.idle = idle
        self.lifetime = lifetime
        self._aead = AESGCM(
            HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"cef-web session tokens").derive(
                secret
            )
        )

    # --- sealing the identity provider's tokens ------------------------------------------------

    def _seal(self, tokens: dict[str, Any], id_hash: str) -> bytes:
        nonce = os.urandom(12)
        # The session's id hash is the associated data: a sealed blob moved to another row fails.
        return nonce + self._aead.encrypt(nonce, json.dumps(tokens).encode(), id_hash.encode())

    def tokens(self, session: WebSession) -> dict[str, Any]:
        """The identity provider's tokens of a signed-in session ({} for a development sign-in)."""
        id_hash = _hash(session.id)
        with self.engine.connect() as conn:
            blob = conn.execute(
                sa.select(web_session.c.tokens).where(web_session.c.id_hash == id_hash)
            ).scalar_one_or_none()
        if not blob:
            return {}
        loaded = json.loads(self._aead.decrypt(blob[:12], blob[12:], id_hash.encode()))
        return loaded if isinstance(loaded, dict) else {}

    # --- life cycle ---------------------------------------------------------------------------

    def _new_row(self, now: datetime) -> tuple[str, dict[str, Any]]:
        session_id = secrets.token_urlsafe(32)
        row = {
            "id_hash": _hash(session_id),
            "csrf_token": secrets.token_urlsafe(32),
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + min(self.idle, self.lifetime),
        }
        return session_id, row

    def create(self, *, pending: dict[str, Any] | None = None) -> WebSession:
        """A new session for someone not signed in (it carries the CSRF token of the sign-in form)."""
        now = datetime.now(UTC)
        session_id, row = self._new_row(now)
        row["pending"] = json.dumps(pending or {})
        with self.engine.begin() as conn:
            conn.execute(web_session.insert().values(**row))
        return WebSession(
            id=session_id,
            csrf_token=row["csrf_token"],
            created_at=now,
            expires_at=row["expires_at"],
            pending=pending or {},
        )

    def get(self, session_id: str | None) -> WebSession | None:
        """The live session with this id, its idle deadline moved on; None if unknown or ended."""
        if not session_id or len(session_id) > 128:
            return None
        id_hash = _hash(session_id)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(web_session).where(web_session.c.id_hash == id_hash)).first()
            if row is None:
                return None
            created = _aware(row.created_at)
            if _aware(row.expires_at) <= now or created + self.lifetime <= now:
                conn.execute(web_session.delete().where(web_session.c.id_hash == id_hash))
                return None
            expires = min(now + self.idle, created + self.lifetime)
            conn.execute(
                web_session.update()
                .where(web_session.c.id_hash == id_hash)
                .values(last_seen_at=now, expires_at=expires)
            )
        return WebSession(
            id=session_id,
            csrf_token=row.csrf_token,
            created_at=created,
            expires_at=expires,
            sub=row.sub,
            name=row.name,
            org=row.org,
            scopes=frozenset((row.scopes or "").split()),
            issuer=row.issuer,
            pending=json.loads(row.pending) if row.pending else {},
        )

    def set_pending(self, session: WebSession, pending: dict[str, Any]) -> None:
        session.pending = pending
        with self.engine.begin() as conn:
            conn.execute(
                web_session.update()
                .where(web_session.c.id_hash == _hash(session.id))
                .values(pending=json.dumps(pending))
            )

    def sign_in(
        self,
        old: WebSession | None,
        *,
        sub: str,
        name: str | None,
        org: str | None,
        scopes: frozenset[str],
        issuer: str,
        tokens: dict[str, Any] | None = None,
    ) -> WebSession:
        """A new session for the person now signed in; the one used to sign in is ended."""
        now = datetime.now(UTC)
        session_id, row = self._new_row(now)
        row.update(
            sub=sub,
            name=name,
            org=org,
            scopes=" ".join(sorted(scopes)),
            issuer=issuer,
            pending=json.dumps({}),
            tokens=self._seal(tokens, row["id_hash"]) if tokens else None,
        )
        with self.engine.begin() as conn:
            # Ended sessions go when someone signs in: the table holds live sessions, give or take.
            conn.execute(web_session.delete().where(web_session.c.expires_at <= now))
            if old is not None:
                conn.execute(web_session.delete().where(web_session.c.id_hash == _hash(old.id)))
            conn.execute(web_session.insert().values(**row))
        return WebSession(
            id=session_id,
            csrf_token=row["csrf_token"],
            created_at=now,
            expires_at=row["expires_at"],
            sub=sub,
            name=name,
            org=org,
            scopes=scopes,
            issuer=issuer,
        )

    def end(self, session: WebSession) -> None:
        with self.engine.begin() as conn:
            conn.execute(web_session.delete().where(web_session.c.id_hash == _hash(session.id)))

    def purge_expired(self) -> int:
        """Removes ended sessions; the number removed."""
        with self.engine.begin() as conn:
            result = conn.execute(web_session.delete().where(web_session.c.expires_at <= datetime.now(UTC)))
        return int(result.rowcount or 0)


def constant_time_equal(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())
