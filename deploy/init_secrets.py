"""The keys-init one-shot: creates every secret the compose deployment needs, once, on its volumes.

Production services never create keys (they refuse to start without them), so this runs first:
each service's ES256 signing key (its JWKS beside it), the tokeniser's master key, the CEF API's
validation-queue key-encryption key, and a random
password for each PostgreSQL role with the pgpass files libpq reads them from. Nothing that
exists is overwritten: rotating a key or a password is a deliberate operation (deploy/README.md).

    python deploy/init_secrets.py --root /secrets [--service-uid 10001] [--postgres-uid 999]

Layout under --root (each directory is one volume, mounted only where it is needed):
    db-init/    postgres.password and <role>.password, read by deploy/postgres/init.sh
    migrate/    pgpass with the owner roles, for the migration one-shots
    tokeniser/  tokeniser.pem (+ .jwks.json), master.key, pgpass for cef_tokeniser_app
    cef-api/    cef-api.pem (+ .jwks.json), queue.key, pgpass for cef_api_app
    audit/      audit.pem (+ .jwks.json), pgpass for cef_audit_app
    web/        web.pem (+ .jwks.json), pgpass for cef_web_app
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from cef_common.keys import jwks_path_for, load_signing_key


@dataclass(frozen=True)
class ServiceDatabase:
    service: str  # the service's name, also its secrets directory
    database: str
    owner_role: str  # owns the schema; runs migrations
    app_role: str  # what the service connects as


DATABASES = (
    ServiceDatabase("tokeniser", "cef_tokeniser", "cef_tokeniser_owner", "cef_tokeniser_app"),
    ServiceDatabase("cef-api", "cef_api", "cef_api_owner", "cef_api_app"),
    ServiceDatabase("audit", "cef_audit", "cef_audit_owner", "cef_audit_app"),
    ServiceDatabase("web", "cef_web", "cef_web_owner", "cef_web_app"),
)
SUPERUSER_PASSWORD = "postgres"
MASTER_KEY_NAME = "master.key"
# The key-encryption key wrapping each queued invoice's data key (docs/queue.md).
QUEUE_KEY_NAME = "queue.key"


def _write_new(path: Path, content: str, *, uid: int | None, mode: int = 0o600) -> bool:
    """Writes `content` to a new file (never replacing one); True when it was created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(content)
    _own(path, uid, mode)
    return True


def _write_replace(path: Path, content: str, *, uid: int | None, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    _own(tmp, uid, mode)
    os.replace(tmp, path)


def _own(path: Path, uid: int | None, mode: int) -> None:
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, uid)


def _password(db_init: Path, role: str, postgres_uid: int | None) -> str:
    path = db_init / f"{role}.password"
    _write_new(path, secrets.token_urlsafe(32), uid=postgres_uid, mode=0o400)
    return path.read_text().strip()


def _pgpass_line(host: str, port: int, database: str, role: str, password: str) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return ":".join(esc(v) for v in (host, str(port), database, role, password))


def init_secrets(
    root: Path, *, service_uid: int | None, postgres_uid: int | None, host: str = "postgres", port: int = 5432
) -> list[str]:
    """Creates what is missing under `root`; returns what it created, for the log."""
    created: list[str] = []
    db_init = root / "db-init"
    if _write_new(
        db_init / f"{SUPERUSER_PASSWORD}.password", secrets.token_urlsafe(32), uid=postgres_uid, mode=0o400
    ):
        created.append("PostgreSQL superuser password")
    owner_lines = []
    for sdb in DATABASES:
        for role in (sdb.owner_role, sdb.app_role):
            if not (db_init / f"{role}.password").exists():
                created.append(f"password of role {role}")
        owner_pw = _password(db_init, sdb.owner_role, postgres_uid)
        app_pw = _password(db_init, sdb.app_role, postgres_uid)
        owner_lines.append(_pgpass_line(host, port, sdb.database, sdb.owner_role, owner_pw))
        service_dir = root / sdb.service
        _write_replace(
            service_dir / "pgpass",
            _pgpass_line(host, port, sdb.database, sdb.app_role, app_pw) + "\n",
            uid=service_uid,
        )
        key_path = service_dir / f"{sdb.service}.pem"
        if not key_path.exists():
            created.append(f"signing key of {sdb.service}")
        load_signing_key(key_path, create=True)
        _own(key_path, service_uid, 0o600)
        _own(jwks_path_for(key_path), service_uid, 0o644)
    _write_replace(root / "migrate" / "pgpass", "\n".join(owner_lines) + "\n", uid=service_uid)
    if _write_new(root / "tokeniser" / MASTER_KEY_NAME, secrets.token_hex(32) + "\n", uid=service_uid):
        created.append("tokeniser master key")
    if _write_new(root / "cef-api" / QUEUE_KEY_NAME, secrets.token_hex(32) + "\n", uid=service_uid):
        created.append("validation queue key-encryption key")
    for directory in ("db-init", "migrate", *(sdb.service for sdb in DATABASES)):
        os.chmod(root / directory, 0o700)
        owner = postgres_uid if directory == "db-init" else service_uid
        if owner is not None:
            os.chown(root / directory, owner, owner)
    return created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="where the secret volumes are mounted")
    parser.add_argument("--service-uid", type=int, default=None, help="owner of the services' files (10001)")
    parser.add_argument(
        "--postgres-uid", type=int, default=None, help="owner of db-init/ (999 in postgres:16)"
    )
    parser.add_argument("--db-host", default="postgres")
    parser.add_argument("--db-port", type=int, default=5432)
    args = parser.parse_args(argv)
    created = init_secrets(
        args.root,
        service_uid=args.service_uid,
        postgres_uid=args.postgres_uid,
        host=args.db_host,
        port=args.db_port,
    )
    for item in created:
        sys.stdout.write(f"created: {item}\n")
    sys.stdout.write("secrets ready" + ("\n" if created else " (nothing new)\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
