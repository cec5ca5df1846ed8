"""`rtrain ui` in a real headless browser (Debian's chromium, driven by selenium through Debian's
chromedriver), its JSON API and its guards (token, Origin) over HTTP, and `rtrain show --plot`.

Jobs are the registry rows and trainer events the launcher keeps; one test stops a real detached
local job with the page's Stop button."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import ROOT, rtrain_cmd

pytest.importorskip("starlette")
pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def fake_job(home: Path, job_id: str, *, status: str, steps: int, name: str | None = None,
             evals: tuple[int, ...] = ()) -> Path:
    """A job as the launcher records it: its registry row and its trainer events."""
    from launcher.paths import checked_home
    from launcher.state import Registry

    registry = Registry(checked_home(home) / "state.db")
    registry.create_job(job_id, name=name, backend="local", spec={"model": "rtrain-tiny", "datasets": ["x.jsonl"]},
                        workdir=None, output_dir=str(home / "runs" / job_id), pod_name=f"rtrain-{job_id}")
    registry.update(job_id, status=status, steps=steps, final_loss=4.0 - 0.01 * steps if status != "running" else None,
                    pod_id=f"local-{job_id}")
    events = home / "jobs" / job_id / "events.jsonl"
    events.parent.mkdir(parents=True, exist_ok=True)
    add_steps(events, 1, steps, total=100)
    with events.open("a") as fh:
        for step in evals:
            fh.write(json.dumps({"event": "eval", "step": step, "eval_loss": 4.2 - 0.01 * step}) + "\n")
    registry.close()
    return events


def add_steps(events: Path, first: int, last: int, total: int) -> None:
    with events.open("a") as fh:
        for step in range(first, last + 1):
            fh.write(json.dumps({"event": "step", "step": step, "total_steps": total, "loss": 4.0 - 0.01 * step,
                                 "lr": 1e-3 * (1 - step / total), "tokens_per_s": 1234.0, "eta_s": 60.0}) + "\n")


@pytest.fixture
def dashboard(home: Path) -> Iterator[str]:
    proc = subprocess.Popen(rtrain_cmd("ui", "--no-browser", "--port", "0"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("dashboard: http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # listening already (the socket is bound before the line)
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def browser() -> Iterator:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are missing: bash tests/system-deps.sh installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, want, timeout: float = 30):  # type: ignore[no-untyped-def]
    """Poll a JavaScript expression until it equals ``want`` (progress, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = driver.execute_script(f"try {{ return {script}; }} catch (e) {{ return null; }}")
        if got == want:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{script}: {got!r}, wanted {want!r}")


def test_the_list_shows_every_job_newest_first(home: Path, dashboard: str, browser) -> None:
    fake_job(home, "261122-100000-aaaa", status="succeeded", steps=30, name="first")
    fake_job(home, "261122-110000-bbbb", status="running", steps=12)
    browser.get(dashboard)
    wait_for(browser, "document.querySelectorAll('#jobs tbody tr').length", 2)
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#jobs tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
    assert [r[1] for r in rows] == ["261122-110000-bbbb", "261122-100000-aaaa"]
    assert rows[0][3] == "running" and rows[0][6] == "12/100" and rows[0][7] == "3.8800"
    assert rows[1][2] == "first" and rows[1][3] == "succeeded"
    status_class = browser.execute_script("return document.querySelector('#jobs tbody tr .status').className")
    assert status_class == "status running"
    # everything the page loaded came from the dashboard itself
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(dashboard))
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(u.startswith(origin) for u in loaded)


def test_a_jobs_page_draws_its_curve_and_it_grows_live(home: Path, dashboard: str, browser) -> None:
    events = fake_job(home, "261122-120000-cccc", status="running", steps=5, evals=(5,))
    browser.get(dashboard)  # the token arrives with the first page
    browser.get(dashboard.split("/?")[0] + "/job/261122-120000-cccc")
    wait_for(browser, "window.rtrainCharts.loss.data[0].length", 5)
    assert browser.execute_script("return window.rtrainCharts.loss.data[2][4]") == pytest.approx(4.15)
    assert browser.find_element("id", "stop").is_displayed()
    assert browser.find_element("id", "tps").text == "1,234"
    add_steps(events, 6, 8, total=100)  # the launcher following the job writes more: the curve grows
    wait_for(browser, "window.rtrainCharts.loss.data[0].length", 8)
    assert browser.find_element("id", "step").text == "8/100"


def test_runs_are_compared_on_one_chart(home: Path, dashboard: str, browser) -> None:
    fake_job(home, "261122-130000-dddd", status="succeeded", steps=10)
    fake_job(home, "261122-140000-eeee", status="succeeded", steps=20)
    browser.get(dashboard)
    wait_for(browser, "document.querySelectorAll('#jobs tbody input').length", 2)
    for box in browser.find_elements("css selector", "#jobs tbody input"):
        box.click()
    browser.find_element("id", "compare").click()
    wait_for(browser, "window.rtrainCharts.compare.series.length", 3)  # x and one series a job
    assert browser.execute_script("return window.rtrainCharts.compare.data[0].length") == 20


def test_every_request_needs_the_token_and_a_stop_needs_the_pages_origin(home: Path, dashboard: str) -> None:
    fake_job(home, "261122-150000-ffff", status="running", steps=3)
    base, token = dashboard.split("/?token=")
    assert httpx.get(f"{base}/api/jobs").status_code == 401
    assert httpx.get(f"{base}/api/jobs", headers={"X-Rtrain-Token": "guess"}).status_code == 403
    assert httpx.get(f"{base}/").status_code == 401 and httpx.get(f"{base}/static/app.js").status_code == 401
    listed = httpx.get(f"{base}/api/jobs", headers={"X-Rtrain-Token": token}).json()
    ls = json.loads(subprocess.run(rtrain_cmd("ls", "--json"), capture_output=True, text=True, check=True,
                                   env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout)
    assert [{k: j[k] for k in ls[0]} for j in listed] == ls  # `rtrain ls --json`'s shape
    one = httpx.get(f"{base}/api/jobs/261122-150000-ffff", headers={"X-Rtrain-Token": token}).json()
    assert [e["step"] for e in one["trainer"]] == [1, 2, 3] and one["spec"]["model"] == "rtrain-tiny"
    later = httpx.get(f"{base}/api/jobs/261122-150000-ffff?since=2", headers={"X-Rtrain-Token": token}).json()
    assert [e["step"] for e in later["trainer"]] == [3]  # only what the page has not drawn yet
    bad = httpx.get(f"{base}/api/jobs/261122-150000-ffff?since=-1", headers={"X-Rtrain-Token": token})
    assert bad.status_code == 400 and "since" in bad.json()["error"]
    assert httpx.get(f"{base}/api/jobs/nope", headers={"X-Rtrain-Token": token}).status_code == 404
    stop = f"{base}/api/jobs/261122-150000-ffff/stop"
    assert httpx.post(stop).status_code == 401
    refused = httpx.post(stop, headers={"X-Rtrain-Token": token, "Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert httpx.get(stop, headers={"X-Rtrain-Token": token}).status_code == 405  # a change is a POST
    still = httpx.get(f"{base}/api/jobs/261122-150000-ffff", headers={"X-Rtrain-Token": token}).json()
    assert still["status"] == "running"
    page = httpx.get(dashboard)
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "samesite=strict" in page.headers["set-cookie"].lower()


def grows(driver, script: str, timeout: float = 120) -> int:  # type: ignore[no-untyped-def]
    """Wait until the number ``script`` gives is positive, then until it is larger: what it became."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        n = driver.execute_script(f"try {{ return {script}; }} catch (e) {{ return 0; }}") or 0
        if first is None and n > 0:
            first = n
        elif first is not None and n > first:
            return int(n)
        time.sleep(0.1)
    raise AssertionError(f"{script} did not grow (first {first})")


def test_a_running_local_jobs_curve_grows_and_stop_ends_it_like_rtrain_down(home_with_tiny: Path, dashboard: str,
                                                                          browser, cli_proc) -> None:
    # a real job, detached: no launcher follows it, the page reads the trainer's own events
    started = cli_proc("launch", "--local", "--max-steps", "100000", "--eval-fraction", "0", "--detach", "--yes",
                       "--json")
    assert started.code == 0, started.err
    job = started.json_line()
    browser.get(dashboard)
    browser.get(dashboard.split("/?")[0] + f"/job/{job['job_id']}")
    wait_for(browser, "!document.getElementById('stop').hidden", True)
    grows(browser, "window.rtrainCharts.loss.data[0].length")
    if os.environ.get("RTRAIN_SCREENSHOTS"):  # how docs/dashboard-job.png is made
        wait_for(browser, "window.rtrainCharts.loss.data[0].length >= 120", True, timeout=300)
        browser.save_screenshot(str(Path(os.environ["RTRAIN_SCREENSHOTS"]) / "dashboard-job.png"))
    browser.find_element("id", "stop").click()
    browser.switch_to.alert.accept()  # "Stop job ...?"
    wait_for(browser, "document.querySelector('#status .status').textContent", "interrupted", timeout=120)
    shown = json.loads(cli_proc("show", job["job_id"], "--json").out)
    assert shown["status"] == "interrupted"
    assert any(e["kind"] == "down" for e in shown["events"])
    assert not (home_with_tiny / "local" / "jobs" / job["job_id"]).exists()  # the machine is gone


def test_show_prints_a_sparkline_and_plots_the_curve(home: Path, cli_proc, tmp_path: Path) -> None:
    fake_job(home, "261122-160000-gggg", status="succeeded", steps=30, evals=(10, 20, 30))
    shown = cli_proc("show", "261122-160000-gggg")
    line = next(x for x in shown.out.splitlines() if x.strip().startswith("loss:"))
    assert "▁" in line and "█" in line and "3.9900 -> 3.7000 (30 steps)" in line
    png = cli_proc("show", "261122-160000-gggg", "--plot", str(tmp_path / "loss.png"))
    assert png.code == 0 and (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = cli_proc("show", "261122-160000-gggg", "--plot", str(tmp_path / "loss.svg"))
    assert svg.code == 0 and b"<svg" in (tmp_path / "loss.svg").read_bytes()[:2000]
    bad = cli_proc("show", "261122-160000-gggg", "--plot", str(tmp_path / "loss.txt"))
    assert bad.code == 2 and "--plot" in bad.err and not (tmp_path / "loss.txt").exists()
