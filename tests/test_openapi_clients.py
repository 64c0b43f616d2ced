"""A client generated from each service's OpenAPI document with openapi-python-client: the generator
drops no operation, and the generated package talks to the running service (multipart upload,
array query parameters, problem+json answers, undocumented statuses refused by the client)."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import cef_api.main
import cef_audit.main
import cef_tokeniser.main
from cef_api.config import Settings as ApiSettings
from cef_audit.config import Settings as AuditSettings
from cef_common.testing import DatabaseFactory, DevIssuer, ServerThread, free_port
from cef_tokeniser.config import Settings as TokeniserSettings
from cef_tokeniser.keys import ensure_dev_master_key

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
# No formatter hooks (the generated code is imported, not kept); the generator has no text/csv
# request bodies, and the reference upload accepts application/octet-stream as well.
CONFIG = {"post_hooks": [], "content_type_overrides": {"text/csv": "application/octet-stream"}}

pytestmark = pytest.mark.skipif(not GENERATOR.exists(), reason="openapi-python-client is not installed")


def _app(service: str, data_dir: Path, database_factory: DatabaseFactory) -> Any:
    common: dict[str, Any] = {
        "data_dir": data_dir,
        "environment": "test",
        "dev_issuer_enabled": True,
        # Nothing listens there: events stay in each service's outbox.
        "audit_url": f"http://127.0.0.1:{free_port()}",
    }
    if service == "tokeniser":
        master = data_dir / "keys" / "master.key"
        ensure_dev_master_key(master)
        url = database_factory("sqlite", cef_tokeniser.main.MIGRATIONS)
        return cef_tokeniser.main.create_app(
            TokeniserSettings(
                **common, database_url=url, master_key_file=master, client_contexts={"tests": ["cef"]}
            )
        )
    if service == "cef-api":
        url = database_factory("sqlite", cef_api.main.MIGRATIONS)
        return cef_api.main.create_app(
            ApiSettings(
                **common,
                database_url=url,
                tokeniser_url=f"http://127.0.0.1:{free_port()}",
                worker_enabled=False,
            )
        )
    url = database_factory("sqlite", cef_audit.main.MIGRATIONS)
    return cef_audit.main.create_app(AuditSettings(**{**common, "audit_url": None}, database_url=url))


def generate(doc: dict[str, Any], package: str, workdir: Path) -> Path:
    """Generates the client package of `doc` under `workdir`; fails on any warning."""
    schema, config = workdir / "openapi.json", workdir / "generator.json"
    schema.write_text(json.dumps(doc))
    config.write_text(json.dumps(CONFIG))
    out = workdir / "generated" / package
    run = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(schema),
            "--output-path",
            str(out),
            "--meta",
            "none",
            "--config",
            str(config),
            "--fail-on-warning",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = run.stdout + run.stderr
    assert run.returncode == 0, said
    for warning in ("Unable to parse", "will not be generated", "WARNING"):
        assert warning not in said, said
    return out


@pytest.fixture
def client_of(
    tmp_path: Path, data_dir: Path, database_factory: DatabaseFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """(service) -> (generated package, running server): the client made from the served document."""
    started: list[ServerThread] = []
    packages: list[str] = []

    def make(service: str) -> tuple[ModuleType, ServerThread]:
        server = ServerThread(_app(service, data_dir, database_factory))
        server.__enter__()
        started.append(server)
        import httpx

        doc = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
        package = f"generated_{service.replace('-', '_')}_client"
        out = generate(doc, package, tmp_path)
        # Nothing of the document is left out: one module per operation.
        modules = [p for p in (out / "api").glob("*/*.py") if p.name != "__init__.py"]
        operations = [op for item in doc["paths"].values() for op in item.values()]
        assert len(modules) == len(operations), sorted(p.stem for p in modules)
        monkeypatch.syspath_prepend(str(out.parent))
        packages.append(package)
        return importlib.import_module(package), server

    yield make
    for server in started:
        server.stop()
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[name]


def _sub(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f"{package.__name__}.{name}")


def test_a_generated_tokeniser_client_tokenises(client_of: Any, dev_issuer: DevIssuer) -> None:
    package, server = client_of("tokeniser")
    api, models = _sub(package, "api.tokens.tokenise"), _sub(package, "models")
    token = dev_issuer.token("tokenise", aud="tokeniser")
    with package.AuthenticatedClient(
        base_url=server.url, token=token, raise_on_unexpected_status=True
    ) as client:
        body = models.TokeniseRequest.from_dict({"kind": "nhs_number", "values": ["9990000018", "12"]})
        answer = api.sync(client=client, body=body)
        assert isinstance(answer, models.TokeniseResponse), answer
        assert answer.tokens[0].startswith("N")
        assert answer.tokens[1] is None
        assert [(e.index, e.code) for e in answer.errors] == [(1, "nhs_number_invalid")]
    # A refusal arrives as the documented problem.
    with package.AuthenticatedClient(
        base_url=server.url, token=dev_issuer.token("audit:read", aud="tokeniser")
    ) as c:
        refused = api.sync(client=c, body=body)
        assert isinstance(refused, models.Problem), refused
        assert (refused.status, refused.code) == (403, "insufficient-scope")


def test_a_generated_cef_api_client_lists_and_uploads(client_of: Any, dev_issuer: DevIssuer) -> None:
    package, server = client_of("cef-api")
    models, types = _sub(package, "models"), _sub(package, "types")
    list_invoices = _sub(package, "api.invoices.list_invoices")
    submit_invoice = _sub(package, "api.invoices.submit_invoice")
    finance = dev_issuer.token("invoices:read", org="00L", aud="cef-api")
    with package.AuthenticatedClient(
        base_url=server.url, token=finance, raise_on_unexpected_status=True
    ) as client:
        statuses = [models.ListInvoicesStatusType0Item(s) for s in ("validated", "approved")]
        page = list_invoices.sync(client=client, status=statuses, limit=10)
        assert isinstance(page, models.InvoicePage), page
        assert page.items == []
    provider = dev_issuer.token("invoices:submit", org="RTR", aud="cef-api")
    with package.AuthenticatedClient(
        base_url=server.url, token=provider, raise_on_unexpected_status=True
    ) as client:
        header = {
            "invoice_number": "RTR-201904-0001",
            "provider_code": "RTR",
            "commissioner_code": "00L",
            "invoice_date": "2019-05-03",
            "period_start": "2019-04-01",
            "period_end": "2019-04-30",
        }
        csv = b"activity_date,nhs_number,point_of_delivery,hrg_code,amount,line_ref\n"
        body = models.SubmitInvoiceBody(
            invoice=models.InvoiceHeaderIn.from_dict(header),
            backing_data=types.File(payload=io.BytesIO(csv), file_name="backing.csv", mime_type="text/csv"),
        )
        answer = submit_invoice.sync(client=client, body=body)
    # Both parts arrived and were read: the header is refused for what it says (no reference data
    # names the provider), not for the shape of the upload.
    assert isinstance(answer, models.Problem), answer
    assert (answer.status, answer.code) == (422, "invoice-header-invalid"), answer
    assert [e.field for e in answer.errors] == ["provider_code"]


def test_a_generated_audit_client_appends_lists_and_verifies(client_of: Any, dev_issuer: DevIssuer) -> None:
    package, server = client_of("audit")
    models = _sub(package, "models")
    append_events = _sub(package, "api.events.append_events")
    get_events = _sub(package, "api.events.get_events")
    verify = _sub(package, "api.integrity.verify")
    event = {
        "action": "read",
        "type": "invoice.lines.read",
        "outcome": "success",
        "actor": {"sub": "staff-0042", "org": "00L"},
        "source": "cef-api",
        "entity": {"type": "invoice", "id": "0b9f7c1e-3d2a-4f5b-8c6d-7e8f9a0b1c2d", "count": 3},
    }
    writer = dev_issuer.token("audit:write", sub="cef-api", aud="audit")
    with package.AuthenticatedClient(
        base_url=server.url, token=writer, raise_on_unexpected_status=True
    ) as client:
        appended = append_events.sync(client=client, body=models.AuditEventIn.from_dict(event))
        assert isinstance(appended, models.AppendResponse), appended
        assert [r.duplicate for r in appended.results] == [False]
    auditor = dev_issuer.token("audit:read", sub="auditor-01", aud="audit")
    with package.AuthenticatedClient(
        base_url=server.url, token=auditor, raise_on_unexpected_status=True
    ) as client:
        page = get_events.sync(client=client, type_=["invoice.lines.read"], purpose="checking the client")
        assert isinstance(page, models.EventPage), page
        assert [item["event_id"] for item in (i.to_dict() for i in page.items)] == [
            appended.results[0].event_id
        ]
        report = verify.sync(client=client)
        assert isinstance(report, models.VerifyOut), report
        assert report.valid is True
