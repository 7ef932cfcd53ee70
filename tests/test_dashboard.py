"""The dashboard (`/ui`), driven by a real headless Chromium against a real
`shoal server --engine`, and its speed with 100,000 jobs stored (plain HTTP).

Jobs coordinate with the tests through gate files, never through sleeps;
every wait polls with a deadline. Each page state is saved as a screenshot
under the test's tmp dir, and copied to test-artifacts/dashboard/ in the
working tree when SHOAL_TEST_ARTIFACTS is set.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import pytest
from conftest import Server, make_ce, make_definition, make_queue, start_server
from engine_support import (
    describe,
    make_env,
    sh,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
    wait_until,
)

from shoal.domain.records import Job, JobStatus
from shoal.store.sqlite import SqliteStore

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # the browser tests skip; the speed test needs no browser
    webdriver = None

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Without the background-networking flags Chromium tries to reach the
# internet (component updates, sync, ...) and stalls on this machine.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)
STATUSES = tuple(s.value for s in JobStatus)
NO_BROWSER = (
    None
    if webdriver is not None and CHROMIUM.exists() and CHROMEDRIVER.exists()
    else "the dashboard's browser tests need Debian's chromium and chromium-driver "
    "(/usr/bin/chromium, /usr/bin/chromedriver) and selenium (pip install -e '.[test]'); "
    ".ci/run installs them"
)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_engine_server(tmp_path_factory.mktemp("dashboard"), "--host-vcpus", "32")
    yield srv
    shutdown(srv)


@pytest.fixture(scope="module")
def batch(server: Server) -> Any:
    return server.client()


class Shots:
    """Screenshots of page states: in the tmp dir, and in the working tree
    (test-artifacts/dashboard/) when SHOAL_TEST_ARTIFACTS is set."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.copy_to = REPO / "test-artifacts" / "dashboard"
        self.copy = bool(os.environ.get("SHOAL_TEST_ARTIFACTS"))

    def save(self, browser: Any, name: str) -> Path:
        path = self.directory / f"{name}.png"
        assert browser.save_screenshot(str(path)), f"no screenshot {name}"
        if self.copy:
            self.copy_to.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, self.copy_to / path.name)
        return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("dashboard-screenshots"))


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if NO_BROWSER:
        pytest.skip(NO_BROWSER)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium never looks for (or downloads) one.
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(profile.parent / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def unique() -> str:
    return "d" + uuid.uuid4().hex[:8]


# -- helpers --------------------------------------------------------------------------


def open_page(browser: Any, url: str, timeout: float = 30.0) -> None:
    """Load `url` and wait until the page has a body: on a loaded machine
    Chromium may return from get() before it has rendered anything, and a
    load that came back blank is tried again."""
    deadline = time.monotonic() + timeout
    while True:
        browser.get(url)
        ready = time.monotonic() + 5
        while time.monotonic() < min(ready, deadline):
            if "</body>" in browser.page_source and browser.find_elements(By.TAG_NAME, "main"):
                return
            time.sleep(0.05)
        if time.monotonic() >= deadline:
            raise AssertionError(f"{url} did not load within {timeout} s")


def job_url(server: Server, job_id: str) -> str:
    return f"{server.url}/ui/jobs/{quote(job_id, safe=':')}"


def gate_script(gate: Path, before: str = "", after: str = "") -> list[str]:
    return sh(f"{before} until [ -e {gate} ]; do sleep 0.02; done; {after}")


def on_page(browser: Any, probe: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll the page (no reload) until `probe` is truthy."""

    def safe() -> T | None:
        try:
            return probe()
        except WebDriverException:  # an element replaced under our feet: look again
            return None

    return wait_until(safe, timeout, what)


def text(browser: Any, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def mark_document(browser: Any) -> None:
    """Tag the loaded document; `same_document` tells whether it is still there."""
    browser.execute_script("window.__shoalTestMark = 'kept';")


def same_document(browser: Any) -> bool:
    return bool(browser.execute_script("return window.__shoalTestMark === 'kept';"))


def accept_confirm(browser: Any) -> None:
    def alert() -> Any:
        try:
            return browser.switch_to.alert
        except NoAlertPresentException:
            return None

    wait_until(alert, 10, "the confirm dialog").accept()


def ce_cells(browser: Any, name: str) -> list[str]:
    row = browser.find_element(By.XPATH, f'//tr[td/strong[text()="{name}"]]')
    return [str(td.text) for td in row.find_elements(By.TAG_NAME, "td")]


def get(server: Server, path: str) -> tuple[float, str]:
    started = time.perf_counter()
    with urllib.request.urlopen(server.url + path, timeout=30) as response:
        assert response.status == 200
        body = response.read().decode()
    return time.perf_counter() - started, body


def post(
    server: Server, path: str, form: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    """A POST that does not follow redirects."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request(
        "POST",
        path,
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def page_counts(html: str, queue: str) -> dict[str, int]:
    found = dict(re.findall(rf'data-count="{re.escape(queue)}\|([A-Z]+)">(\d+)<', html))
    return {s: int(found[s]) for s in STATUSES}


def counts(**nonzero: int) -> dict[str, int]:
    return {s: nonzero.get(s, 0) for s in STATUSES}


# -- browser tests --------------------------------------------------------------------


def test_overview_shows_queues_and_compute_environments(
    server: Server, batch: Any, browser: Any, shots: Shots, unique: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    run = make_env(batch, f"{unique}-run", max_vcpus=6, command=gate_script(gate))
    held = make_env(batch, f"{unique}-held", ce_state="DISABLED")
    running = [submit(batch, run, vcpus=2, name=f"busy{i}") for i in range(2)]
    quick = submit(batch, run, ["true"], name="quick")
    queued = [submit(batch, held, name=f"held{i}") for i in range(3)]
    try:
        for job in running:
            wait_for(batch, job, "RUNNING")
        wait_for(batch, quick, "SUCCEEDED")
        for job in queued:
            wait_for(batch, job, "RUNNABLE")

        open_page(browser, server.url + "/ui")
        html = browser.page_source
        assert page_counts(html, run["queue_name"]) == counts(RUNNING=2, SUCCEEDED=1)
        assert page_counts(html, held["queue_name"]) == counts(RUNNABLE=3)
        assert text(browser, f'[data-used="{run["ce_name"]}"]') == "4"
        assert text(browser, f'[data-used="{held["ce_name"]}"]') == "0"
        cells = ce_cells(browser, run["ce_name"])
        assert cells[1:6] == ["MANAGED / EC2", "ENABLED", "VALID", "default", "6"]
        assert ce_cells(browser, held["ce_name"])[2] == "DISABLED"
        shots.save(browser, "overview-running")

        # The counts follow the jobs without a reload.
        mark_document(browser)
        gate.touch()
        done = f'[data-count="{run["queue_name"]}|SUCCEEDED"]'
        on_page(browser, lambda: text(browser, done) == "3", "3 SUCCEEDED on the overview")
        on_page(
            browser,
            lambda: text(browser, f'[data-used="{run["ce_name"]}"]') == "0",
            "no vCPUs in use",
        )
        assert same_document(browser)
        shots.save(browser, "overview-done")

        # A queue's count links to the job list with that filter.
        runnable = f'[data-count="{held["queue_name"]}|RUNNABLE"]'
        browser.find_element(By.CSS_SELECTOR, runnable).click()
        on_page(browser, lambda: "/ui/jobs?" in browser.current_url, "the job list")
        listed = {a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.jobs a.mono")}
        assert listed == set(queued)
        shots.save(browser, "jobs-filtered")
    finally:
        gate.touch()


def test_array_progress_advances_without_reload(
    server: Server, batch: Any, browser: Any, shots: Shots, unique: str, tmp_path: Path
) -> None:
    env = make_env(batch, f"{unique}-arr", max_vcpus=8)
    script = f"until [ -e {tmp_path}/gate-$AWS_BATCH_JOB_ARRAY_INDEX ]; do sleep 0.02; done"
    parent = submit(batch, env, sh(script), arrayProperties={"size": 4})
    try:
        wait_until(
            lambda: describe(batch, parent)["arrayProperties"]["statusSummary"]["RUNNING"] == 4,
            20,
            "4 running children",
        )
        open_page(browser, job_url(server, parent))
        mark_document(browser)
        on_page(browser, lambda: text(browser, '[data-summary="RUNNING"]') == "4", "4 running")
        assert text(browser, "#array-done") == "0"
        assert len(browser.find_elements(By.CSS_SELECTOR, "#children ~ table tbody tr")) == 4
        shots.save(browser, "array-0-of-4")
        for i in range(4):
            (tmp_path / f"gate-{i}").touch()
            on_page(
                browser,
                lambda n=i + 1: text(browser, "#array-done") == str(n),
                f"{i + 1} children finished on the page",
            )
            assert text(browser, '[data-summary="SUCCEEDED"]') == str(i + 1)
            width = browser.find_element(
                By.CSS_SELECTOR, '#array-progress rect[data-status="SUCCEEDED"]'
            ).get_attribute("width")
            assert float(width) == pytest.approx(250.0 * (i + 1), abs=0.2)
            shots.save(browser, f"array-{i + 1}-of-4")
        on_page(browser, lambda: text(browser, "#job-status") == "SUCCEEDED", "the parent done")
        assert same_document(browser)
    finally:
        for i in range(4):
            (tmp_path / f"gate-{i}").touch()


def test_log_lines_appear_while_the_job_runs(
    server: Server, batch: Any, browser: Any, shots: Shots, unique: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    env = make_env(batch, f"{unique}-log")
    job = submit(
        batch,
        env,
        gate_script(gate, before="echo 'first line';", after="echo 'second line'"),
        name="printer",
    )
    try:
        wait_for(batch, job, "RUNNING")
        open_page(browser, job_url(server, job))
        mark_document(browser)
        on_page(browser, lambda: "first line" in text(browser, "#log-lines"), "the first line")
        assert "second line" not in text(browser, "#log-lines")
        assert text(browser, "#job-status") == "RUNNING"
        shots.save(browser, "log-first-line")
        gate.touch()
        on_page(browser, lambda: "second line" in text(browser, "#log-lines"), "the second line")
        on_page(browser, lambda: text(browser, "#job-status") == "SUCCEEDED", "the job done")
        log = text(browser, "#log-lines")
        assert log.count("first line") == log.count("second line") == 1
        assert log.index("first line") < log.index("second line")
        on_page(
            browser,
            lambda: "Essential container" in text(browser, "#attempts"),
            "the attempt in the table",
        )
        assert same_document(browser)
        shots.save(browser, "log-both-lines")
    finally:
        gate.touch()


def test_cancel_and_terminate_from_the_page(
    server: Server, batch: Any, browser: Any, shots: Shots, unique: str, tmp_path: Path
) -> None:
    held = make_env(batch, f"{unique}-held", ce_state="DISABLED")
    queued = submit(batch, held, name="to-cancel")
    wait_for(batch, queued, "RUNNABLE")
    open_page(browser, job_url(server, queued))
    reason = "<b>cancelled</b> from the page & test"
    box = browser.find_element(By.CSS_SELECTOR, "input[name=reason]")
    box.clear()
    box.send_keys(reason)
    shots.save(browser, "cancel-before")
    browser.find_element(By.ID, "cancel").click()
    accept_confirm(browser)
    on_page(browser, lambda: "done=cancel" in browser.current_url, "the page after CancelJob")
    detail = wait_for(batch, queued, "FAILED")
    assert detail["statusReason"] == reason
    assert detail.get("isCancelled") is True
    # The reason is shown as text, not as markup.
    assert text(browser, "#job-reason") == reason
    assert not browser.find_elements(By.CSS_SELECTOR, "#job-reason b")
    assert "Cancel requested" in text(browser, ".flash")
    assert not browser.find_element(By.ID, "terminate").is_enabled()
    shots.save(browser, "cancel-after")

    gate = tmp_path / "never"
    run = make_env(batch, f"{unique}-run")
    running = submit(batch, run, gate_script(gate), name="to-terminate")
    try:
        wait_for(batch, running, "RUNNING")
        open_page(browser, job_url(server, running))
        browser.find_element(By.ID, "terminate").click()
        accept_confirm(browser)
        on_page(browser, lambda: "done=terminate" in browser.current_url, "the page after it")
        detail = wait_for(batch, running, "FAILED", timeout=20)
        assert detail["statusReason"] == "Stopped from the shoal dashboard"
        assert detail.get("isTerminated") is True
        on_page(browser, lambda: text(browser, "#job-status") == "FAILED", "FAILED on the page")
        shots.save(browser, "terminate-after")
    finally:
        gate.touch()


def test_resubmit_makes_the_same_job_again(
    server: Server, batch: Any, browser: Any, shots: Shots, unique: str
) -> None:
    held = make_env(
        batch,
        f"{unique}-re",
        ce_state="DISABLED",
        command=["echo", "Ref::who"],
        parameters={"who": "world"},
        environment=[{"name": "MODE", "value": "a"}, {"name": "KEEP", "value": "k"}],
    )
    original = submit(
        batch,
        held,
        ["echo", "Ref::who", "again"],
        name="again",
        overrides={
            "environment": [{"name": "MODE", "value": "b"}, {"name": "EXTRA", "value": "x"}],
            "resourceRequirements": [{"type": "VCPU", "value": "2"}],
        },
        parameters={"who": "moon"},
        retryStrategy={"attempts": 2},
        timeout={"attemptDurationSeconds": 120},
        tags={"team": "data"},
    )
    wait_for(batch, original, "RUNNABLE")
    open_page(browser, job_url(server, original))
    browser.find_element(By.ID, "resubmit").click()
    accept_confirm(browser)
    on_page(browser, lambda: "from=" in browser.current_url, "the new job's page")
    new_id = urlsplit(browser.current_url).path.rsplit("/", 1)[-1]
    assert new_id != original
    assert "Resubmitted" in text(browser, ".flash")
    shots.save(browser, "resubmitted")

    old, new = describe(batch, original), describe(batch, new_id)
    for member in (
        "jobName",
        "jobQueue",
        "jobDefinition",
        "parameters",
        "retryStrategy",
        "timeout",
        "tags",
    ):
        assert new[member] == old[member], member
    assert new["container"]["command"] == ["echo", "moon", "again"] == old["container"]["command"]

    def env(detail: dict[str, Any]) -> dict[str, str]:
        return {e["name"]: e["value"] for e in detail["container"]["environment"]}

    assert env(new) == env(old) == {"MODE": "b", "KEEP": "k", "EXTRA": "x"}
    needs = {r["type"]: r["value"] for r in new["container"]["resourceRequirements"]}
    assert needs == {"VCPU": "2", "MEMORY": "128"}
    assert "dependsOn" not in new or new["dependsOn"] == []


def test_secret_values_stay_out_of_the_page(
    server: Server, batch: Any, browser: Any, shots: Shots, unique: str
) -> None:
    secrets = {
        "hunter2-s3cr3t-value",
        "sess-abcdef123456",
        "pa55w0rd-in-url",
        "tok-9f8e7d6c5b",
        "prod-api-key-Xyz123",
    }
    held = make_env(
        batch,
        f"{unique}-sec",
        ce_state="DISABLED",
        command=["echo", "Ref::token"],
        parameters={"token": "tok-9f8e7d6c5b"},
        environment=[
            {"name": "DB_PASSWORD", "value": "hunter2-s3cr3t-value"},
            {"name": "REGION_NAME", "value": "eu-west-1"},
        ],
        secrets=[
            {
                "name": "API_KEY",
                "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:"
                "prod-api-key-Xyz123",
            }
        ],
    )
    job = submit(
        batch,
        held,
        overrides={
            "environment": [
                {"name": "SESSION_TOKEN", "value": "sess-abcdef123456"},
                {"name": "DATABASE_URL", "value": "postgresql://app:pa55w0rd-in-url@db/app"},
            ]
        },
        name="secretive",
    )
    detail = wait_for(batch, job, "RUNNABLE")
    stored = repr(detail)
    assert all(s in stored for s in secrets)  # the API has them; the dashboard must not show them

    open_page(browser, job_url(server, job))
    html = browser.page_source
    for name in ("DB_PASSWORD", "SESSION_TOKEN", "DATABASE_URL", "API_KEY", "REGION_NAME"):
        assert name in html
    assert "eu-west-1" in html and "postgresql://app:" in html
    assert "(hidden)" in html
    shots.save(browser, "secrets-hidden")
    pages = [html]
    for path in (
        f"/ui/jobs/{job}",
        f"/ui/api/jobs/{job}",
        f"/ui/api/jobs/{job}/log?follow=1",
        f"/ui/jobs?queue={held['queue_name']}",
        "/ui",
    ):
        pages.append(get(server, path)[1])
    for page in pages:
        leaked = [s for s in secrets if s in page]
        assert not leaked, leaked


# -- plain HTTP -----------------------------------------------------------------------


def test_actions_are_post_only_and_same_origin(server: Server, batch: Any, unique: str) -> None:
    held = make_env(batch, f"{unique}-http", ce_state="DISABLED")
    job = submit(batch, held)
    wait_for(batch, job, "RUNNABLE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/ui/jobs/{job}/cancel", timeout=10)
    assert info.value.code == 405
    assert info.value.headers["Allow"] == "POST"

    foreign = post(server, f"/ui/jobs/{job}/cancel", "reason=x", {"Origin": "http://evil.test"})
    assert foreign.status == 403
    assert describe(batch, job)["status"] == "RUNNABLE"

    # The form's nonce is SubmitJob's idempotency token: sent twice, one job.
    nonce = uuid.uuid4().hex
    own = {"Origin": server.url}
    first = post(server, f"/ui/jobs/{job}/resubmit", f"nonce={nonce}", own)
    again = post(server, f"/ui/jobs/{job}/resubmit", f"nonce={nonce}", own)
    assert first.status == again.status == 303
    assert first.headers["Location"] == again.headers["Location"]
    assert first.headers["Location"].startswith("/ui/jobs/")

    done = post(server, f"/ui/jobs/{job}/cancel", "reason=by+http", own)
    assert done.status == 303
    assert done.headers["Location"] == f"/ui/jobs/{job}?done=cancel"
    assert describe(batch, job)["statusReason"] == "by http"

    with urllib.request.urlopen(f"{server.url}/ui/jobs/{job}", timeout=10) as response:
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{server.url}/ui/jobs/no-such-job", timeout=10)
    assert info.value.code == 404


N_JOBS = 100_000
BUDGET_S = 1.0


def _status(i: int) -> JobStatus:
    """Mostly finished jobs, a backlog, and a few running, as a busy day leaves them."""
    r = i % 100
    for bound, status in (
        (60, JobStatus.SUCCEEDED),
        (70, JobStatus.FAILED),
        (95, JobStatus.RUNNABLE),
        (97, JobStatus.PENDING),
        (98, JobStatus.SUBMITTED),
        (99, JobStatus.RUNNING),
    ):
        if r < bound:
            return status
    return JobStatus.STARTING


def test_overview_and_job_list_are_fast_with_100000_jobs(tmp_path: Path) -> None:
    server = start_server(tmp_path)  # the API only: the stored jobs stay as they are
    try:
        batch = server.client()
        ce = make_ce(batch, "big-ce", max_vcpus=4096)
        make_queue(batch, "big-q", [ce])
        make_queue(batch, "other-q", [ce])
        make_definition(batch, "big-def")
        now = int(time.time() * 1000)
        container = {
            "image": "busybox",
            "command": ["true"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "128"},
            ],
        }
        jobs = []
        expected: dict[str, dict[str, int]] = {"big-q": counts(), "other-q": counts()}
        for i in range(N_JOBS):
            status = _status(i)
            queue = "other-q" if i % 10 == 0 else "big-q"
            expected[queue][status.value] += 1
            live = status in (JobStatus.STARTING, JobStatus.RUNNING)
            jobs.append(
                Job(
                    job_id=str(uuid.uuid4()),
                    job_name=f"job-{i % 1000}",
                    queue=queue,
                    definition_name="big-def",
                    definition_revision=1,
                    status=status,
                    created_at=now - (N_JOBS - i) * 100,
                    spec={"parameters": {}, "container": container, "dependsOn": []},
                    runtime={"ce": "big-ce", "attemptNumber": 1} if live else {},
                )
            )
        # Straight into the store, in bulk (the server reads the same file).
        store = SqliteStore(server.data_dir / "shoal.db")
        try:
            with store.transaction() as tx:
                for start in range(0, N_JOBS, 10_000):
                    tx.insert_jobs(jobs[start : start + 10_000])
        finally:
            store.close()

        took, html = get(server, "/ui")
        assert took < BUDGET_S, f"/ui took {took:.2f} s"
        assert page_counts(html, "big-q") == expected["big-q"]
        assert page_counts(html, "other-q") == expected["other-q"]
        assert 'data-used="big-ce">2000<' in html  # 2% of the jobs hold 1 vCPU each

        newest_top = jobs[-1].job_id
        pages = {
            "/ui/jobs": newest_top,
            "/ui/jobs?queue=big-q": newest_top,
            "/ui/jobs?queue=other-q&status=SUCCEEDED": None,
            "/ui/jobs?status=RUNNABLE": None,
            "/ui/jobs?name=job-999": newest_top,
            "/ui/jobs?queue=big-q&name=job-99*": newest_top,
            "/ui/jobs?status=FAILED&name=job-1*": None,
        }
        for path, first in pages.items():
            took, html = get(server, path)
            assert took < BUDGET_S, f"{path} took {took:.2f} s"
            ids = re.findall(r'<a href="/ui/jobs/([0-9a-f-]{36})" class="mono">', html)
            assert len(ids) == 50, (path, len(ids))
            if first is not None:
                assert ids[0] == first, path
            token = re.search(r'href="([^"]*token=[^"]+)" class="next"', html)
            assert token is not None, path
            took, html = get(server, token.group(1).replace("&amp;", "&"))
            assert took < BUDGET_S, f"{path}, page 2, took {took:.2f} s"
            more = re.findall(r'<a href="/ui/jobs/([0-9a-f-]{36})" class="mono">', html)
            assert len(more) == 50 and not set(more) & set(ids), path
        took, _ = get(server, "/ui/api/overview")
        assert took < BUDGET_S
    finally:
        server.stop()
