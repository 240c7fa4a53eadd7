"""The console in a real headless Chromium against a running Farebox (Postgres + Redis, simulated upstream).

A team signs in, starts a fine-tuning job from the page and watches it succeed; a second team
sees none of it; the admin sees both teams. The first test takes a screenshot of the page; with
FAREBOX_UPDATE_SCREENSHOT=1 it replaces docs/console.png, the README's picture, and otherwise
leaves the work tree alone.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, Stack
from tests.console.support import BASE_MODEL, chat, console, sdk, settled_job, upload
from tests.harness import ROOT

pytestmark = pytest.mark.timeout(180)

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "docs" / "console.png"
UPDATE_SCREENSHOT = os.environ.get("FAREBOX_UPDATE_SCREENSHOT") == "1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
JOB_TIMEOUT_MS = 40_000


def _require_browser() -> None:
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"Debian's chromium is not at {CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        problems.append(
            "Playwright for Python is not installed (pip install playwright; never `playwright install`)"
        )
    if not problems:
        return
    message = "browser tests need a headless Chromium: " + "; ".join(problems)
    if IN_CI:
        pytest.fail(f"{message}; CI=true, so this is a failure, not a skip", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Tab:
    """One browser tab on the console that fails the test on any script error or failed request."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.base_url = base_url
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on(
            "console",
            lambda msg: msg.type == "error" and self.errors.append(f"console: {msg.text}"),
        )

    def sign_in(self, secret: str) -> None:
        from playwright.sync_api import expect

        self.page.goto(f"{self.base_url}/console")
        self.page.get_by_label("Team key or admin token").fill(secret)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("#nav")).to_be_visible()
        assert secret not in self.page.url
        assert self.page.evaluate("sessionStorage.getItem('farebox.console.secret')") == secret

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


@pytest.fixture(scope="module")
def world(pg_stack: Stack) -> dict[str, Any]:
    """Two teams with budgets and some spend; team A also has a finished job started through the SDK."""
    admin = pg_stack.admin
    tag = uuid.uuid4().hex[
        :4
    ]  # names read well in the screenshot and stay unique in a shared database
    team_a, key_a = admin.team_with_key(name=f"acme-research-{tag}")
    team_b, key_b = admin.team_with_key(name=f"globex-support-{tag}")
    admin.budget(team_a["id"], "5", "daily", name="a-daily")
    admin.budget(team_a["id"], "40", "monthly", name="a-training", kind="training")
    admin.budget(team_b["id"], "9", "monthly", name="b-monthly")
    a, b = sdk(pg_stack, key_a), sdk(pg_stack, key_b)
    chat(a)
    chat(b)
    file_id = upload(a)
    job = a.fine_tuning.jobs.create(
        model=BASE_MODEL, training_file=file_id, hyperparameters={"n_epochs": 1}
    )
    done = settled_job(pg_stack, key_a, job.id)
    pg_stack.ledger.wait_rows(team_b["id"], 1)
    return {"a": team_a, "key_a": key_a, "b": team_b, "key_b": key_b, "file": file_id, "job": done}


# Records every status the row's badge shows, so the test sees the page change without reloads.
_WATCH_STATUS = """
(jobId) => {
  window.__seen = [];
  const note = () => {
    const badge = document.querySelector(`tr[data-job-id="${jobId}"] [data-role=status] .badge`);
    const status = badge && badge.dataset.status;
    if (status && window.__seen[window.__seen.length - 1] !== status) window.__seen.push(status);
  };
  note();
  new MutationObserver(note).observe(document.getElementById("jobs-body"), { childList: true, subtree: true });
}
"""


def test_a_team_starts_a_job_and_watches_it_succeed(
    pg_stack: Stack, world: dict[str, Any], browser: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    tab = Tab(browser, pg_stack.farebox.base_url)
    page = tab.page
    tab.sign_in(world["key_a"])
    expect(page.locator("#who-label")).to_contain_text(world["a"]["name"])
    expect(page.locator("#page h1")).to_have_text("Fine-tuning")

    # The job form: the file uploaded through the SDK, two epochs, and the estimate before starting.
    expect(page.locator(f'#job-file option[value="{world["file"]}"]')).to_have_count(1)
    page.get_by_label("Training file", exact=True).select_option(world["file"])
    page.get_by_label("Epochs", exact=True).fill("2")
    page.get_by_label("Epochs", exact=True).dispatch_event("change")
    estimate = page.locator("#job-estimate")
    expect(estimate).to_contain_text("× 2 epochs")
    quoted = re.search(r"Estimate: (\$[\d.,]+)", estimate.inner_text())
    assert quoted
    page.get_by_role("button", name="Start job").click()
    expect(page.locator("#job-form-status")).to_contain_text("Started ftjob-")
    job_id = re.search(
        r"(ftjob-\S+?)\.?$", page.locator("#job-form-status").inner_text().strip()
    ).group(1)  # type: ignore[union-attr]

    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row).to_have_count(1)
    page.evaluate(_WATCH_STATUS, job_id)
    expect(row.locator("[data-role=status] .badge")).to_have_attribute(
        "data-status", "succeeded", timeout=JOB_TIMEOUT_MS
    )
    seen = page.evaluate("window.__seen")
    assert seen[-1] == "succeeded" and len(seen) >= 2, seen
    assert set(seen[:-1]) <= {"validating_files", "queued", "running"}, seen

    # Estimate at creation beside the actual charge, which is the job's ledger row.
    expect(row.locator("[data-charge]")).to_have_count(1, timeout=JOB_TIMEOUT_MS)
    [charge] = [r for r in pg_stack.ledger.rows(world["a"]["id"]) if r["job_id"] == job_id]
    assert row.locator("[data-charge]").get_attribute("data-charge") == str(charge["cost_nano"])
    assert row.locator("[data-role=estimate]").inner_text().startswith(quoted.group(1))
    [record] = [
        j
        for j in console(pg_stack, world["key_a"]).get("/api/jobs").json()["data"]
        if j["id"] == job_id
    ]
    versus = (
        "as estimated"
        if charge["cost_nano"] == record["estimate_nano"]
        else (
            "under estimate" if charge["cost_nano"] < record["estimate_nano"] else "over estimate"
        )
    )
    expect(row.locator("[data-role=charge]")).to_contain_text(versus)
    fine_tuned = row.locator("[data-role=fine-tuned-model]").inner_text()
    assert fine_tuned == charge["model_answered"] and fine_tuned.startswith("ft:")

    row.get_by_role("button", name="Events").click()
    events = page.locator(f"#events-{job_id}")
    expect(events).to_contain_text("The job has successfully completed")
    expect(events).to_contain_text("Fine-tuning job started")
    expect(row.get_by_role("button", name="Hide events")).to_have_attribute("aria-expanded", "true")
    shot = SCREENSHOT if UPDATE_SCREENSHOT else tmp_path / "console.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(PNG_SIGNATURE)

    # Inference on the new model shows in the row, and its link opens the spend of that model.
    chat(sdk(pg_stack, world["key_a"]), model=fine_tuned)
    link = row.get_by_role("link", name=f"Inference spend of {fine_tuned}")
    expect(link).to_contain_text("1 req.", timeout=20_000)
    link.click()
    expect(page.locator("#page h1")).to_have_text("Spend")
    expect(page.locator(".chip")).to_contain_text(fine_tuned)
    requests = page.get_by_role("table", name="Last requests")
    expect(requests.locator("tbody tr")).to_have_count(1)
    expect(requests).to_contain_text(fine_tuned)

    # Without the filter: each budget with its pace, the chart by model and kind, the last requests.
    page.get_by_role("button", name="Show every model").click()
    budgets = page.get_by_role("table", name="Budgets this period")
    expect(budgets).to_contain_text("a-daily")
    expect(budgets).to_contain_text("a-training")
    expect(budgets.locator("[role=progressbar]")).to_have_count(2)
    expect(page.locator("svg.chart rect")).not_to_have_count(0)
    legend = page.get_by_role("list", name="Series")
    expect(legend).to_contain_text(f"{BASE_MODEL} · training")
    expect(legend).to_contain_text("gpt-4o-mini · inference")
    # The world's chat and SDK job, this job, and the call on its model.
    expect(page.get_by_role("table", name="Last requests").locator("tbody tr")).to_have_count(4)

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Team key or admin token")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    tab.close()


def test_a_second_team_sees_none_of_it(
    pg_stack: Stack, world: dict[str, Any], browser: Any
) -> None:
    from playwright.sync_api import expect

    tab = Tab(browser, pg_stack.farebox.base_url)
    page = tab.page
    tab.sign_in(world["key_b"])
    expect(page.locator("#who-label")).to_contain_text(world["b"]["name"])
    expect(page.locator("#jobs-status")).to_contain_text("0 jobs")
    expect(page.locator("#jobs-body")).to_contain_text("No fine-tuning jobs yet")
    expect(page.locator(f'#job-file option[value="{world["file"]}"]')).to_have_count(0)
    expect(page.get_by_role("link", name="Admin")).to_be_hidden()

    # Naming team A in the URL changes nothing: the key decides the team.
    page.goto(f"{pg_stack.farebox.base_url}/console#/spend?team={world['a']['id']}")
    budgets = page.get_by_role("table", name="Budgets this period")
    expect(budgets).to_contain_text("b-monthly")
    expect(page.get_by_role("table", name="Last requests").locator("tbody tr")).to_have_count(1)
    body = page.locator("main").inner_text()
    for secret_of_a in (
        world["a"]["name"],
        world["job"]["id"],
        world["job"]["fine_tuned_model"],
        "a-daily",
        BASE_MODEL,
    ):
        assert secret_of_a not in body

    page.goto(f"{pg_stack.farebox.base_url}/console#/admin")
    expect(page.locator("#page h1")).to_have_text(
        "Fine-tuning"
    )  # not an admin: sent to its own jobs
    tab.close()


def test_the_admin_sees_every_team(pg_stack: Stack, world: dict[str, Any], browser: Any) -> None:
    from playwright.sync_api import expect

    tab = Tab(browser, pg_stack.farebox.base_url)
    page = tab.page
    tab.sign_in(pg_stack.config.admin_token)
    expect(page.locator("#who-label")).to_contain_text("admin")
    expect(page.locator("#page h1")).to_have_text("Admin")

    ranking = page.get_by_role("table", name="Teams ranked by spend this month")
    for team in (world["a"], world["b"]):
        expect(ranking.get_by_role("link", name=team["name"])).to_be_visible()
    names = ranking.locator("tbody tr td:nth-child(2)").all_inner_texts()
    assert names.index(world["a"]["name"]) < names.index(world["b"]["name"])  # A trained a model
    recon = page.get_by_role("table", name="Budget counters against the ledger")
    rows_of_a = recon.locator("tbody tr").filter(has_text=world["a"]["name"])
    expect(rows_of_a).to_have_count(2, timeout=20_000)
    expect(rows_of_a.locator('.badge[data-status="ok"]')).to_have_count(2)
    expect(
        page.locator(".tile").filter(has_text="Reconciliation").locator(".badge")
    ).to_be_visible()

    page.get_by_role("link", name="Fine-tuning").click()
    job_row = page.locator(f'tr[data-job-id="{world["job"]["id"]}"]')
    expect(job_row).to_contain_text(world["a"]["name"])
    expect(job_row.locator("[data-role=status] .badge")).to_have_attribute(
        "data-status", "succeeded"
    )

    ranking_link = f"#/spend?team={world['b']['id']}"
    page.goto(f"{pg_stack.farebox.base_url}/console{ranking_link}")
    expect(page.get_by_label("Team", exact=True)).to_have_value(world["b"]["id"])
    expect(page.get_by_role("table", name="Budgets this period")).to_contain_text("b-monthly")
    tab.close()


def test_money_and_buckets_are_formatted_exactly(pg_stack: Stack, browser: Any) -> None:
    page = browser.new_page()
    page.goto(f"{pg_stack.farebox.base_url}/console")
    got = page.evaluate("""async () => {
        const dom = await import("/console/static/dom.js");
        const spend = await import("/console/static/spend.js");
        const now = new Date(Date.UTC(2026, 10, 25, 18, 30));
        const days = spend.rangeBuckets("30d", now);
        const hours = spend.rangeBuckets("24h", now);
        const months = spend.rangeBuckets("12m", now);
        const series = spend.toSeries([
          {period_start: "2026-11-25", model: "m", kind: "inference", cost_nano: 5},
          {period_start: "2026-11-24", model: "m", kind: "inference", cost_nano: 7},
          {period_start: "2026-11-25", model: "t", kind: "training", cost_nano: 9},
          {period_start: "2020-01-01", model: "old", kind: "training", cost_nano: 1},
        ], days.buckets);
        return {
          usd: [0, 1, 1224000, 10000000, 2482200, 1000000000, 1234567890123, -5, 999999999, 9007199254740991]
            .map(dom.usd),
          days: [days.since, days.buckets.length, days.buckets.at(-1).key],
          hours: [hours.since, hours.buckets.length, hours.buckets.at(-1).key],
          months: [months.since, months.buckets.length, months.buckets.at(-1).key],
          series: series.map((s) => [s.label, s.values.slice(-2)]),
        };
    }""")
    page.close()
    assert got["usd"] == [
        "$0.00",
        "$0.000000001",
        "$0.001224",
        "$0.01",
        "$0.0024822",
        "$1.00",
        "$1,234.57",
        "-$0.000000005",
        "$1.00",
        "$9,007,199.25",
    ]
    assert got["days"] == ["2026-10-27", 30, "2026-11-25"]
    assert got["hours"] == ["2026-11-24T19:00:00Z", 24, "2026-11-25T18:00:00Z"]
    assert got["months"] == ["2025-12", 12, "2026-11-01"]
    assert got["series"] == [["m · inference", [7, 5]], ["t · training", [0, 9]]]
