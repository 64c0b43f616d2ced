"""One invoice's whole life in a real browser, each role in a browser profile of their own, over
`cef up`: the provider submits a demo invoice through the form, CEF staff challenge a query line, the
provider answers, staff decide the rest and approve, finance pays what was approved, and the auditor
finds every step in the invoice's history and the audit chain verified. Then each role is refused a
page of another role's. Every page is screenshotted and checked with axe-core."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import urlsplit

import pytest
from browser_support import (
    CefUp,
    Watch,
    axe_findings,
    demo_invoice,
    new_context,
    shot,
    sign_in,
    watched_page,
)
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# Each demo invoice (demo/invoices) once: with JavaScript, every page screenshotted and checked
# with axe; without, the same journey through plain forms (the submission's progress bar, the NHS.UK
# file upload's drop zone and the header's menu are all scripts).
RUNS = [("RTR-201904-0000", True), ("RVW-201905-0001", False)]
INVOICE_PAGE = re.compile(r"/provider/invoices/([0-9a-f-]{36})$")
# The audit event types of each step of the journey (docs/audit.md; the CLI's end-to-end test).
# Deciding checked lines together is one bulk decision per reason code all of them carry
# (`invoice.lines.bulk_decision`), the rest one by one: which happens depends on the lines' reasons.
STEPS = {
    "invoice.submit": "submission",
    "invoice.line.challenge": "challenge",
    "invoice.line.challenge.response": "response",
    "invoice.line.decision": "decision on a line",
    "invoice.approve": "approval",
    "invoice.payment": "payment",
}
AUDIT_WAIT = 60.0


def money(text: str) -> Decimal:
    """An amount as a page shows it ("£1,234.56") as a Decimal."""
    figure = re.sub(r"[£,\s]", "", text)
    assert re.fullmatch(r"\d+(\.\d\d)?", figure), f"not an amount: {text!r}"
    return Decimal(figure)


def summary_value(page: Page, key: str) -> str:
    """The value of a summary list's row, by its key."""
    row = page.locator(".nhsuk-summary-list__row").filter(
        has=page.locator(".nhsuk-summary-list__key", has_text=re.compile(f"^\\s*{re.escape(key)}\\s*$"))
    )
    expect(row).to_have_count(1)
    return row.locator(".nhsuk-summary-list__value").inner_text().strip()


def flash(page: Page) -> Locator:
    return page.locator(".nhsuk-notification-banner--success")


@dataclass
class Journey:
    """The people of the journey, each in their own browser profile, and what they share."""

    browser: Browser
    system: CefUp
    invoice: str
    javascript: bool
    watch: Watch = field(default_factory=Watch)
    contexts: list[BrowserContext] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    # Accessibility findings, kept until the journey's end so that one page's finding does not hide
    # the rest of the journey (nor the findings on later pages).
    findings: list[str] = field(default_factory=list)

    def person(self, role: str, org: str | None = None) -> Page:
        context = new_context(self.browser, self.system.web, javascript=self.javascript)
        self.contexts.append(context)
        page = watched_page(context, self.watch)
        sign_in(page, role, org)
        return page

    def record(self, page: Page, name: str, tolerate: dict[str, str] | None = None) -> None:
        """The page as the person sees it, kept as a screenshot, and checked with axe once per page
        (in the run with JavaScript: axe checks the page as most people see it)."""
        if not self.javascript:
            return
        shot(page, name)
        if name not in self.checked:
            self.checked.add(name)
            if found := axe_findings(page, name, tolerate=tolerate):
                self.findings.append(found)

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture(params=RUNS, ids=["javascript", "no-javascript"])
def journey(request: pytest.FixtureRequest, browser: Browser, system: CefUp) -> Iterator[Journey]:
    invoice, javascript = request.param
    people = Journey(browser, system, invoice, javascript)
    try:
        yield people
    finally:
        people.close()


def submit(provider: Page, journey: Journey) -> str:
    """The provider submits the demo invoice through the form; returns the invoice's id."""
    header, _, backing = demo_invoice(journey.invoice)
    provider.get_by_role("button", name="Submit an invoice").click()
    expect(provider.get_by_role("heading", level=1)).to_have_text("Submit an invoice")
    # The NHS.UK frontend's file upload button (10.6.1) puts its status ("No file chosen") and its
    # "Choose file" text in adjacent spans with no space between, so axe reads the visible text as
    # "No file chosenChoose file" and finds it missing from the accessible name, which holds "No
    # file chosen, Choose file or drop file": the label is in the name (WCAG 2.5.3 is met). Only on
    # that button, and only for that rule.
    journey.record(provider, "provider-submit", tolerate={"label-content-name-mismatch": "#backing_data"})
    provider.get_by_label("Invoice number").fill(header["invoice_number"])
    provider.get_by_label("Commissioner code").fill(header["commissioner_code"])
    for name in ("invoice_date", "period_start", "period_end"):
        year, month, day = header[name].split("-")
        provider.locator(f"#{name}-day").fill(str(int(day)))
        provider.locator(f"#{name}-month").fill(str(int(month)))
        provider.locator(f"#{name}-year").fill(year)
    # With JavaScript the NHS.UK file upload shows its own button over the input; the input takes
    # the file either way.
    provider.locator("input[type=file][name=backing_data]").set_input_files(str(backing))
    provider.get_by_role("button", name="Send the invoice").click()
    # With JavaScript the page sends the form itself (to show progress) and shows the answer; without,
    # the browser posts it: either way the invoice's page follows.
    expect(provider).to_have_url(INVOICE_PAGE, timeout=60_000)
    expect(provider.get_by_role("heading", level=1)).to_have_text(header["invoice_number"])
    # A small invoice is checked while it is sent: its page shows the outcome at once.
    expect(flash(provider)).to_contain_text("Invoice submitted")
    expect(provider.locator("main")).to_contain_text("Validated")
    match = INVOICE_PAGE.search(urlsplit(provider.url).path)
    assert match is not None
    journey.record(provider, "provider-invoice")
    return match.group(1)


@dataclass
class QueryLine:
    ref: str
    reasons: list[str]
    claimed: Decimal


def query_lines(staff: Page) -> list[QueryLine]:
    """The query lines still to decide, as the staff invoice page's table shows them."""
    lines = []
    table = staff.locator("table.cef-staff-lines")
    for row in table.locator("tbody tr").all():
        ref = row.locator("input[type=checkbox][name=line_ref]").get_attribute("value")
        assert ref is not None
        cells = row.locator("td")
        reasons = [r.strip() for r in cells.nth(3).inner_text().split(",") if r.strip()]
        lines.append(QueryLine(ref, reasons, money(cells.nth(6).inner_text())))
    return lines


def test_one_invoice_through_every_role_in_a_browser(journey: Journey) -> None:
    header, _, _ = demo_invoice(journey.invoice)
    number, commissioner = header["invoice_number"], header["commissioner_code"]
    # The provider submits the invoice.
    provider = journey.person("provider", header["provider_code"])
    journey.record(provider, "provider-invoices")
    invoice_id = submit(provider, journey)
    validated = money(summary_value(provider, "Total of valid lines"))
    in_query = int(summary_value(provider, "Query lines"))
    assert in_query >= 2, "the journey needs two query lines: one challenged, the rest decided in bulk"

    # CEF staff find it in their queue and open its query lines.
    staff = journey.person("staff", commissioner)
    expect(staff.get_by_role("heading", level=1)).to_have_text("Query queue")
    journey.record(staff, "staff-queue")
    staff.get_by_role("link", name=re.compile(re.escape(number))).click()
    assert urlsplit(staff.url).path == f"/staff/invoices/{invoice_id}"
    expect(staff.get_by_role("heading", level=1)).to_have_text(number)
    journey.record(staff, "staff-query-lines")
    lines = query_lines(staff)
    assert len(lines) == in_query
    challenged, rest = lines[0], lines[1:]

    # Staff challenge one line.
    challenge_form = staff.locator(f"form[action='/staff/invoices/{invoice_id}/challenge']")
    challenge_form.get_by_label("Line").select_option(challenged.ref)
    challenge_form.get_by_label("Your question to the provider").fill(
        f"Line {challenged.ref}: please check the activity against the patient's record."
    )
    challenge_form.get_by_role("button", name="Send the challenge").click()
    expect(flash(staff)).to_contain_text(f"Line {challenged.ref} challenged")
    journey.record(staff, "staff-challenge-sent")

    # The provider sees the challenge and answers it.
    provider.goto("/provider/challenges")
    expect(provider.get_by_role("heading", level=1)).to_have_text("Challenges to answer")
    card = provider.locator("section.cef-provider-challenge").filter(
        has=provider.get_by_role("heading", name=f"Line {challenged.ref} of {number}", exact=True)
    )
    expect(card).to_have_count(1)
    journey.record(provider, "provider-challenges")
    card.get_by_label("Your answer").fill("The activity is right: the patient's record was updated since.")
    card.get_by_role("button", name="Send your answer").click()
    expect(flash(provider)).to_contain_text("Response sent")

    # Staff accept the answered line at its claimed amount, and reject the rest in bulk.
    staff.reload()
    answered = staff.locator("table.cef-staff-lines tbody tr").filter(has_text=challenged.ref)
    expect(answered).to_contain_text("Responded")
    decide = staff.locator(f"form[action='/staff/invoices/{invoice_id}/decide']")
    decide.get_by_label("Line").select_option(challenged.ref)
    decide.get_by_label("Accept", exact=True).check()
    decide.get_by_label("Amount to pay, in pounds").fill(f"{challenged.claimed:.2f}")
    decide.get_by_role("button", name="Record the decision").click()
    expect(flash(staff)).to_contain_text(f"Line {challenged.ref}")

    for line in rest:
        staff.get_by_label(f"Select line {line.ref}", exact=True).check()
    bulk = staff.locator("#decide-bulk-form")
    bulk.get_by_label("Reject", exact=True).check()
    bulk.get_by_label("Reason (needed to reject)").select_option(rest[0].reasons[0])
    bulk.get_by_label("Note (optional)").fill("Not payable as invoiced: see the reason.")
    journey.record(staff, "staff-bulk-decision")
    bulk.get_by_role("button", name="Decide the selected lines").click()
    expect(flash(staff)).to_contain_text(f"{len(rest)} line(s) rejected")
    carried = Counter(reason for line in rest for reason in line.reasons)
    steps = dict(STEPS)
    if any(count >= 2 for count in carried.values()):
        steps["invoice.lines.bulk_decision"] = "decision on every line of a reason"
    expect(staff.locator("main")).to_contain_text("Every query line of this invoice is decided")

    staff.get_by_role("button", name="Approve the invoice").click()
    expect(flash(staff)).to_contain_text(f"Invoice {number} approved")
    approved = validated + challenged.claimed
    assert money(summary_value(staff, "Approved amount")) == approved
    journey.record(staff, "staff-approved")

    # Finance pay what was approved.
    finance = journey.person("finance", commissioner)
    expect(finance.get_by_role("heading", level=1)).to_be_visible()
    journey.record(finance, "finance-approved")
    finance.get_by_role("link", name=number, exact=True).click()
    assert urlsplit(finance.url).path == f"/finance/invoices/{invoice_id}"
    outstanding = money(summary_value(finance, "Outstanding"))
    assert outstanding == approved
    journey.record(finance, "finance-invoice")
    finance.get_by_label("Amount paid").fill(f"{outstanding:.2f}")
    finance.get_by_label("Payment reference").fill("BACS-BROWSER-0001")
    # The date paid is today's unless changed.
    finance.get_by_role("button", name="Record payment").click()
    expect(flash(finance)).to_be_visible()
    expect(finance.locator("main")).to_contain_text("This invoice is paid in full")
    assert money(summary_value(finance, "Paid so far")) == approved
    journey.record(finance, "finance-paid")

    # The provider sees it paid.
    provider.goto(f"/provider/invoices/{invoice_id}")
    assert money(summary_value(provider, "Paid so far")) == approved

    # The auditor finds every step in the invoice's history, and the chain verified.
    auditor = journey.person("auditor")
    journey.record(auditor, "auditor-events")
    found = history(auditor, invoice_id, set(steps))
    missing = {t: step for t, step in steps.items() if t not in found}
    assert not missing, f"steps not in the invoice's history: {missing} (found {sorted(found)})"
    journey.record(auditor, "auditor-invoice-history")
    auditor.goto("/auditor/verification")
    expect(auditor.get_by_role("heading", level=2, name=re.compile("Result"))).to_contain_text("Verified")
    journey.record(auditor, "auditor-verification")

    # Each role is refused a page of another's, and the refusal says so.
    for person, path in (
        (provider, f"/staff/invoices/{invoice_id}"),
        (staff, f"/finance/invoices/{invoice_id}"),
        (finance, f"/auditor/entities/invoice/{invoice_id}"),
        (auditor, f"/provider/invoices/{invoice_id}"),
        (journey.person("board", commissioner), f"/provider/invoices/{invoice_id}"),
    ):
        response = person.goto(path)
        assert response is not None
        assert response.status == 403, f"{path}: {response.status}"
        expect(person.get_by_role("heading", level=1)).to_have_text("You cannot use this page")
    journey.record(provider, "refused-provider-on-staff-page")

    journey.watch.assert_no_csp_violations()
    findings = journey.findings
    assert not findings, "\n\n".join(findings)


def history(auditor: Page, invoice_id: str, wanted: set[str]) -> set[str]:
    """The event types of the invoice's history as the auditor's pages show them, every page of it;
    read again until every step has arrived (events reach the audit service through outboxes)."""
    deadline = time.monotonic() + AUDIT_WAIT
    while True:
        auditor.goto(f"/auditor/entities/invoice/{invoice_id}")
        expect(auditor.get_by_role("heading", level=1)).to_have_text(invoice_id)
        found: set[str] = set()
        while True:
            cells = auditor.locator("table.cef-auditor-events tbody tr td:nth-child(2)")
            for cell in cells.all():
                found.add(cell.locator(".cef-auditor-code").first.inner_text().strip())
            more = auditor.locator("a.nhsuk-pagination__link--next")
            if more.count() == 0:
                break
            more.click()
        if wanted <= found or time.monotonic() > deadline:
            auditor.goto(f"/auditor/entities/invoice/{invoice_id}")
            return found
        time.sleep(1)
