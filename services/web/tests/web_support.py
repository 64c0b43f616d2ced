"""Helpers of the web app's tests: the real audit, tokeniser and CEF API on free ports (in
threads), trusting the web app's key as `cef up` sets them up, the demo world loaded, and the web
app itself in process behind a cookie-keeping test client."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from cef_common import db
from cef_common.devtokens import ensure_dev_issuer
from cef_common.keys import jwks_path_for, load_signing_key
from cef_common.settings import TrustedIssuer
from cef_common.testing import DevIssuer, ServerThread
from cef_web.config import Settings as WebSettings
from cef_web.main import MIGRATIONS as WEB_MIGRATIONS
from cef_web.main import create_app as create_web
from cef_web.roles import SCOPES_FOR

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / "demo"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Stack:
    """The three services, running; and how to make a web app (and browsers) over them."""

    data_dir: Path
    issuer: DevIssuer
    audit_url: str
    tokeniser_url: str
    api_url: str

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=60)

    def api_headers(self, scope: str, org: str | None = None, sub: str = "tester") -> dict[str, str]:
        return self.issuer.headers(scope, org=org, sub=sub)

    def audit_headers(self) -> dict[str, str]:
        return self.issuer.headers("audit:read", aud="audit", sub="test-auditor")

    def submit_demo(self, name: str) -> dict[str, Any]:
        """Submits a demo invoice (as its provider, through the API): its summary."""
        header = json.loads((DEMO / "invoices" / f"{name}.json").read_bytes())
        files = {
            "invoice": (
                "invoice.json",
                (DEMO / "invoices" / f"{name}.json").read_bytes(),
                "application/json",
            ),
            "backing_data": ("backing.csv", (DEMO / "invoices" / f"{name}.csv").read_bytes(), "text/csv"),
        }
        with self.api() as api:
            r = api.post(
                "/v1/invoices",
                files=files,
                headers=self.api_headers("invoices:submit", org=header["provider_code"]),
            )
        assert r.status_code in (200, 201), r.text
        body: dict[str, Any] = r.json()
        return body

    def web_settings(self, **overrides: Any) -> WebSettings:
        values: dict[str, Any] = {
            "data_dir": self.data_dir,
            "environment": "test",
            "dev_issuer_enabled": True,
            "cookie_secure": False,
            "cef_api_url": self.api_url,
            "audit_url": self.audit_url,
            "http_retries": 0,
            **overrides,
        }
        return WebSettings(**values)

    @contextlib.contextmanager
    def web(self, **overrides: Any) -> Iterator[TestClient]:
        """The web app in process, its lifespan running; a test client that keeps cookies."""
        settings = self.web_settings(**overrides)
        db.upgrade(WEB_MIGRATIONS, settings.effective_database_url)
        with TestClient(create_web(settings), base_url="http://testserver", follow_redirects=False) as client:
            yield client


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, role: str, org: str | None = None, name: str = "") -> None:
    """Signs `client` in through the development sign-in page."""
    page = client.get("/sign-in")
    r = client.post(
        "/sign-in/dev",
        data={"csrf_token": csrf_of(page), "role": role, "org": org or "", "name": name, "next": "/"},
    )
    assert r.status_code == 303, r.text


def post_form(
    client: TestClient, page_path: str, action: str, data: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    """Posts a form the way a browser would: the CSRF token taken from the page that shows it."""
    page = client.get(page_path)
    assert page.status_code == 200, page.text
    return client.post(action, data={"csrf_token": csrf_of(page), **data}, **kwargs)


@contextlib.contextmanager
def running_stack(data_dir: Path, *, load_demo: bool = True) -> Iterator[Stack]:
    """Audit, tokeniser and CEF API on SQLite under `data_dir`, trusting each other and the web app's
    key exactly as `cef up` configures them."""
    from cef_api.config import Settings as ApiSettings
    from cef_api.main import MIGRATIONS as API_MIGRATIONS
    from cef_api.main import create_app as create_api
    from cef_audit.config import Settings as AuditSettings
    from cef_audit.main import MIGRATIONS as AUDIT_MIGRATIONS
    from cef_audit.main import create_app as create_audit
    from cef_tokeniser.config import Settings as TokeniserSettings
    from cef_tokeniser.keys import ensure_dev_master_key
    from cef_tokeniser.main import MIGRATIONS as TOKENISER_MIGRATIONS
    from cef_tokeniser.main import create_app as create_tokeniser

    keys = data_dir / "keys"
    issuer = DevIssuer(keys, ensure_dev_issuer(keys))
    for name in ("audit", "tokeniser", "cef-api", "web"):
        load_signing_key(keys / f"{name}.pem", create=True)

    def trust(name: str, scopes: list[str]) -> TrustedIssuer:
        return TrustedIssuer(
            issuer=name, jwks_file=jwks_path_for(keys / f"{name}.pem"), allowed_scopes=scopes
        )

    common: dict[str, Any] = {"data_dir": data_dir, "environment": "test", "dev_issuer_enabled": True}
    audit_settings = AuditSettings(
        **common,
        checkpoint_interval_seconds=0,
        trusted_issuers=[
            trust("tokeniser", ["audit:write"]),
            trust("cef-api", ["audit:write"]),
            trust("web", ["audit:write", *SCOPES_FOR["audit"]]),
        ],
    )
    db.upgrade(AUDIT_MIGRATIONS, audit_settings.effective_database_url)
    with ServerThread(create_audit(audit_settings)) as audit:
        master = keys / "tokeniser-master.key"
        ensure_dev_master_key(master)
        tokeniser_settings = TokeniserSettings(
            **common,
            master_key_file=master,
            audit_url=audit.url,
            trusted_issuers=[trust("cef-api", ["audit:write", "tokenise", "detokenise"])],
        )
        db.upgrade(TOKENISER_MIGRATIONS, tokeniser_settings.effective_database_url)
        with ServerThread(create_tokeniser(tokeniser_settings)) as tokeniser:
            api_settings = ApiSettings(
                **common,
                tokeniser_url=tokeniser.url,
                audit_url=audit.url,
                http_retries=0,
                validation_processes=0,
                seed_reference_dir=DEMO / "reference" if load_demo else None,
                trusted_issuers=[trust("tokeniser", ["audit:write"]), trust("web", SCOPES_FOR["cef-api"])],
            )
            db.upgrade(API_MIGRATIONS, api_settings.effective_database_url)
            with ServerThread(create_api(api_settings)) as api:
                yield Stack(data_dir, issuer, audit.url, tokeniser.url, api.url)
