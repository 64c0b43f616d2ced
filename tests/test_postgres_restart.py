"""PostgreSQL restarted under load: the three services, on a private PostgreSQL cluster of this
test's own (the machine's shared server is never touched), keep running through a restart of the
cluster and answer correctly again afterwards without being restarted themselves: pooled
connections are replaced, no invoice is left open, and the audit outbox relay resumes."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from fault_stack import Stack, running_stack, small_world, wait_for, write_reference  # noqa: E402

from cef_common.testing import free_port  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

DATABASES = {"audit": "cef_audit", "tokeniser": "cef_tokeniser", "cef-api": "cef_api"}


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivateCluster:
    """A throwaway PostgreSQL cluster on a free port, run as the `postgres` user when this process
    is root (initdb refuses root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="cef-pg-"))
        self.data = self.root / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run a private cluster")
            if shutil.which("runuser") is None:
                pytest.skip("running as root and there is no runuser to start a private cluster as postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def pg_ctl(self, *args: str) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", *args)

    def start(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-o", options, "-l", str(self.root / "server.log"), "start")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_databases(self, names: list[str]) -> None:
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()

    def restart(self) -> None:
        # Fast: open connections are cut, as a failover or a crash-restart would cut them.
        self.pg_ctl("-m", "fast", "-l", str(self.root / "server.log"), "restart")

    def destroy(self) -> None:
        try:
            self.pg_ctl("-m", "immediate", "stop")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) are installed")
    c = PrivateCluster(bin_dir)
    try:
        c.start()
        c.create_databases(list(DATABASES.values()))
        yield c
    finally:
        c.destroy()


class Load:
    """Submissions (each of a new invoice number) and reads, one after another, until stopped."""

    def __init__(self, stack: Stack, header: dict[str, Any], backing: bytes) -> None:
        self.stack, self.header, self.backing = stack, header, backing
        self.results: list[tuple[str, int, str]] = []  # (what, status, content type)
        self.stop = threading.Event()
        self.n = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        provider = self.header["provider_code"]
        headers = self.stack.headers("invoices:submit", org=provider)
        while not self.stop.is_set():
            self.n += 1
            try:
                r = self.stack.submit(
                    {**self.header, "invoice_number": f"PG-{self.n:04d}"}, self.backing, timeout=60
                )
                self.results.append(("submit", r.status_code, r.headers.get("content-type", "")))
                r = httpx.get(f"{self.stack.url('cef-api')}/v1/invoices", headers=headers, timeout=60)
                self.results.append(("list", r.status_code, r.headers.get("content-type", "")))
            except httpx.HTTPError as exc:
                self.results.append(("error", 0, type(exc).__name__))

    def successes(self) -> int:
        return sum(1 for what, status, _ in self.results if what == "submit" and status == 201)


def test_services_recover_from_a_postgres_restart_under_load(tmp_path: Path, cluster: PrivateCluster) -> None:
    world = small_world(seed=66, invoices=1, lines=10)
    reference = write_reference(world, tmp_path / "world")
    inv = world.invoices[0]
    provider = inv.header["provider_code"]
    urls = {service: cluster.url(name) for service, name in DATABASES.items()}
    fast_relay = {"AUDIT_RELAY_POLL_SECONDS": "0.2", "AUDIT_RELAY_MAX_BACKOFF_SECONDS": "1"}
    env = {
        "cef-api": {f"CEF_API_{k}": v for k, v in fast_relay.items()},
        "tokeniser": {f"CEF_TOKENISER_{k}": v for k, v in fast_relay.items()},
    }
    with running_stack(tmp_path, reference_dir=reference, env=env, database_urls=urls) as stack:
        pids = {name: s.process.pid for name, s in stack.services.items() if s.process}
        load = Load(stack, inv.header, inv.backing)
        load.thread.start()
        try:
            wait_for(lambda: load.successes() >= 3, "submissions before the restart", 120)
            before = len(load.results)
            cluster.restart()
            # The load goes on through the restart and after it, until submissions succeed again.
            wait_for(lambda: load.successes() >= 3 + 3 and len(load.results) > before + 6, "recovery", 120)
        finally:
            load.stop.set()
            load.thread.join(120)

        # No service was restarted: the same processes answer.
        for name, service in stack.services.items():
            assert service.process is not None
            assert service.process.poll() is None, name
            assert service.process.pid == pids[name]
            assert service.ready(), name

        # Every answer during the outage was a success or a problem+json server error; none hung.
        after = load.results[before:]
        assert all(
            status in (200, 201) or (status >= 500 and ctype.startswith("application/problem+json"))
            for _, status, ctype in after
        ), Counter((w, s) for w, s, _ in after)
        assert not [r for r in load.results if r[0] == "error"], load.results

        # A submission after the restart is validated, and no invoice is left open (an open one
        # would hold up every later invoice of its chain).
        r = stack.submit({**inv.header, "invoice_number": "PG-AFTER"}, inv.backing, key="pg-after")
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "validated"

        def none_open() -> bool:
            return not [i for i in stack.invoices(provider) if i["status"] in ("received", "validating")]

        wait_for(none_open, "every invoice to be validated or failed", 120)

        # The outbox relays resumed: everything recorded reached the audit service, which verifies.
        for service in ("cef-api", "tokeniser"):
            engine = sa.create_engine(urls[service])
            try:

                def drained(engine: sa.Engine = engine) -> bool:
                    with engine.connect() as conn:
                        q = "SELECT count(*) FROM audit_outbox WHERE delivered_at IS NULL"
                        return conn.execute(sa.text(q)).scalar_one() == 0

                wait_for(drained, f"the {service} outbox to drain", 120)
            finally:
                engine.dispose()
        audit = httpx.get(
            f"{stack.url('audit')}/v1/verify", headers=stack.headers("audit:read", aud="audit"), timeout=60
        )
        assert audit.status_code == 200, audit.text
        assert audit.json()["valid"] is True, audit.json()
        events = httpx.get(
            f"{stack.url('audit')}/v1/events",
            params={"source": "cef-api", "limit": 1000},
            headers=stack.headers("audit:read", aud="audit"),
            timeout=60,
        ).json()["items"]
        assert any(
            e["type"] == "invoice.submit" and (e.get("entity") or {}).get("id") == r.json()["id"]
            for e in events
        )
