"""Every page each role can reach by following links, after the demo invoices are in: none fails,
none is cacheable, none carries inline script or style, and no NHS number, date of birth or
postcode of the demo world appears in a page, its title, a link, a redirect or the web app's log
(re-identification, which shows one patient's identifiers after a POST, is reached by no link)."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from web_support import DEMO, Stack, sign_in

ORG = {"provider": "RTR", "staff": "00C", "finance": "00C", "board": "00C", "auditor": None}
MAX_PAGES = 60


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]
        self._in_title = tag == "title"

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False


def _demo_identifiers() -> tuple[set[str], set[str], set[str]]:
    nhs, dobs, postcodes = set(), set(), set()
    with (DEMO / "reference" / "patients.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            nhs.add(row["nhs_number"])
            if row["date_of_birth"]:
                dobs.add(row["date_of_birth"])
            if row["postcode"]:
                postcodes.add(row["postcode"].replace(" ", "").upper())
    for path in (DEMO / "invoices").glob("*.csv"):
        with path.open(newline="", encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                nhs.add(re.sub(r"\D", "", row.get("nhs_number") or "") or "-")
                if (row.get("date_of_birth") or "").strip():
                    dobs.add(row["date_of_birth"].strip())
                if (row.get("postcode") or "").strip():
                    postcodes.add(re.sub(r"\s", "", row["postcode"]).upper())
    nhs.discard("-")
    return nhs, dobs, postcodes


IDENTIFIERS = _demo_identifiers()


def identifiers_in(place: str, text: str) -> list[str]:
    nhs, dobs, postcodes = IDENTIFIERS
    squashed = re.sub(r"[\s-]", "", text)
    found = [f"an NHS number in {place}" for d in re.findall(r"\d{10}", squashed) if d in nhs]
    found += [f"a date of birth in {place}" for d in re.findall(r"\d{4}-\d{2}-\d{2}", text) if d in dobs]
    upper = re.sub(r"\s", "", text).upper()
    found += [f"a postcode in {place}" for p in postcodes if p in upper]
    return found


def _crawl(web: TestClient, start: str) -> Iterator[tuple[str, httpx.Response]]:
    seen: set[str] = set()
    queue = [start]
    while queue and len(seen) < MAX_PAGES:
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        r = web.get(url)
        yield url, r
        if r.status_code in (301, 302, 303, 307) and "location" in r.headers:
            queue.append(r.headers["location"])
            continue
        if "text/html" not in r.headers.get("content-type", ""):
            continue
        parser = _Links()
        parser.feed(r.text)
        for href in parser.hrefs:
            target = urljoin(url, href)
            parts = urlsplit(target)
            if parts.netloc not in ("", "testserver") or not parts.path.startswith("/"):
                continue
            if parts.path.startswith(("/assets/", "/static/", "/docs", "/openapi")):
                continue
            local = parts.path + (f"?{parts.query}" if parts.query else "")
            if local not in seen:
                queue.append(local)


@pytest.fixture(scope="module")
def submitted(stack: Stack) -> Stack:
    order = (DEMO / "invoices" / "ORDER").read_text().split()
    for name in order:
        stack.submit_demo(Path(name).stem)
    return stack


@pytest.mark.parametrize("role", list(ORG))
def test_every_page_a_role_reaches_is_clean(
    submitted: Stack, role: str, capfd: pytest.CaptureFixture[str]
) -> None:
    problems: list[str] = []
    pages = 0
    with submitted.web() as web:
        sign_in(web, role, ORG[role])
        for url, r in _crawl(web, "/"):
            pages += 1
            problems += identifiers_in(f"the URL {url}", url)
            if r.status_code >= 500:
                problems.append(f"{url} failed with {r.status_code}")
            location = r.headers.get("location", "")
            problems += identifiers_in(f"the redirect from {url}", location)
            if "text/html" not in r.headers.get("content-type", ""):
                continue
            body: str = r.text
            parser = _Links()
            parser.feed(body)
            problems += identifiers_in(f"the title of {url}", parser.title)
            problems += identifiers_in(f"the page {url}", body)
            problems += [
                f"a link on {url} holds an identifier" for h in parser.hrefs if identifiers_in("", h)
            ]
            if r.headers.get("cache-control") != "no-store":
                problems.append(f"{url} may be cached")
            if re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body):
                problems.append(f"{url} has an inline script")
            if re.search(r"\sstyle=", body):
                problems.append(f"{url} has an inline style")
            if "Traceback" in body:
                problems.append(f"{url} shows a stack trace")
    logged = capfd.readouterr()
    problems += identifiers_in("the web app's log", logged.out + logged.err)
    assert pages > 1
    assert problems == []
