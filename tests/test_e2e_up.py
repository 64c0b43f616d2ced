"""`cef up` as a user runs it: three processes on real ports, dev tokens, clean shutdown."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_up_serves_all_three_and_accepts_dev_tokens(up: Any) -> None:
    banner = up.log.read_text()
    assert "CEF is up" in banner
    assert "cef token" in banner

    tok = up.token("tokenise", aud="tokeniser")
    r = httpx.post(
        f"{up.url('tokeniser')}/v1/tokenise",
        json={"kind": "nhs_number", "values": ["9434765919"]},
        headers={"Authorization": f"Bearer {tok}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["tokens"][0]
    assert "9434765919" not in r.text

    tok = up.token("audit:read", aud="audit")
    r = httpx.get(f"{up.url('audit')}/v1/verify", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text
    assert r.json()["valid"] is True

    tok = up.token("invoices:submit", aud="cef-api", org="RTR")
    r = httpx.get(f"{up.url('cef-api')}/v1/invoices", headers={"Authorization": f"Bearer {tok}"})
    assert r.status_code == 200, r.text

    # No token, or a token for another service: refused by every service.
    for service in up.ports:
        assert httpx.get(f"{up.url(service)}/v1/anything").status_code in (401, 404)
    r = httpx.get(
        f"{up.url('cef-api')}/v1/invoices", headers={"Authorization": f"Bearer {up.token('x', 'audit')}"}
    )
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_sigterm_stops_every_process(up: Any) -> None:
    children = up.children()
    # One process per service and the web app.
    assert len(children) == len(up.ports) == 4
    up.process.send_signal(signal.SIGTERM)
    assert up.process.wait(30) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_dying_service_stops_the_rest_with_failure(up: Any) -> None:
    children = up.children()
    os.kill(children[0], signal.SIGKILL)
    assert up.process.wait(30) != 0
    time.sleep(0.5)
    for pid in children[1:]:
        assert not Path(f"/proc/{pid}").exists()
