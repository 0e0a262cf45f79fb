"""The dashboard (`autocompress serve`, at /) in a real browser: headless Chromium driven by
Selenium against a real server on loopback.

Chromium and its driver come from Debian (`apt-get install chromium chromium-driver`;
`.ci/run` installs them). Where they are missing these tests fail and say so; on a machine
without them, `AUTOCOMPRESS_SKIP_BROWSER=1` opts out explicitly (README, "Tests")."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
import httpx
import pytest
import yaml

from conftest import AUTH, DEMO_SPEC, HANG_GUARD, REPO, TOKEN, make_spec_data, wait_for

pytestmark = pytest.mark.slow  # each test starts the service (and Chromium)

DASHBOARD = REPO / "autocompress" / "service" / "dashboard"
XSS = "<img src=x onerror=alert(1)>"


def _executables() -> tuple[str, str]:
    browser = os.environ.get("AUTOCOMPRESS_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("AUTOCOMPRESS_CHROMEDRIVER") or shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    if os.environ.get("AUTOCOMPRESS_SKIP_BROWSER") == "1":
        pytest.skip("AUTOCOMPRESS_SKIP_BROWSER=1: the browser tests are opted out on this machine")
    pytest.fail("the dashboard's browser tests need Chromium and its WebDriver: `apt-get install chromium "
                "chromium-driver` (Debian), or name them with AUTOCOMPRESS_CHROMIUM and AUTOCOMPRESS_CHROMEDRIVER; "
                "to opt out on a machine without them, set AUTOCOMPRESS_SKIP_BROWSER=1", pytrace=False)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "experiments" / "bench"))
    from dashboard import chromium_driver

    chromium, chromedriver = _executables()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium_driver(downloads, browser=chromium, driver=chromedriver, profile=tmp_path / "chromium-profile")
    driver.downloads = downloads
    yield driver
    driver.quit()


def until(driver, condition, timeout: float = HANG_GUARD):
    """Wait for ``condition(driver)`` (the timeout only catches a hang)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def by_css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def sign_in(driver, server, token: str = TOKEN) -> None:
    driver.get(server.url + "/")
    field = until(driver, lambda d: (by_css(d, "#token") or [None])[0])
    field.send_keys(token)
    by_css(driver, "#sign-in button[type=submit]")[0].click()


def no_script_ran(driver) -> None:
    """No alert is open and the console holds no Content-Security-Policy refusal or error."""
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 (raises when there is none)
    problems = [entry["message"] for entry in driver.get_log("browser")  # (a refused request is the network's)
                if entry["source"] != "network" or "Content Security Policy" in entry["message"]]
    assert not problems, problems


@pytest.fixture
def serve(servers, reference_cache):
    """A service whose jobs find the digits reference model (no training in the tests)."""
    def start(*args: str, env: dict | None = None):
        return servers(*args, env={"AUTOCOMPRESS_CACHE": str(reference_cache), **(env or {})})
    return start


def settled_run(runs: Path, search_id: str, name: str) -> None:
    """A search the service knows, cancelled before it started (so no job runs), named ``name``."""
    run_dir = runs / search_id
    run_dir.mkdir(parents=True)
    (run_dir / "request.json").write_text(json.dumps({**make_spec_data(), "name": name}))
    (run_dir / "submitted.json").write_text(json.dumps({"id": search_id, "submitted_at": time.time()}))
    (run_dir / "cancelled").touch()


def test_the_examples_the_dashboard_offers_are_the_shipped_specs():
    index = json.loads((DASHBOARD / "examples" / "index.json").read_text())
    assert index["examples"]
    for example in index["examples"]:
        assert (DASHBOARD / "examples" / example["file"]).read_bytes() == (REPO / example["source"]).read_bytes(), \
            f"{example['file']} differs from {example['source']}: copy it again"


def test_a_digits_search_submitted_through_the_form_runs_ends_and_matches_the_api(serve, browser):
    """The digits demo spec with a small budget, through the submit form: the page shows the
    search running (held in its 2nd full evaluation), then done; the plot holds exactly what
    pareto.json holds, at the same coordinates; a downloaded model is the API's file, byte
    for byte; the report opens in a sandboxed frame; no script is refused or fails."""
    from selenium.webdriver.support.ui import Select

    server = serve(env={"AUTOCOMPRESS_FAULT_INJECT": "wait-on-full:2"})
    sign_in(browser, server)
    until(browser, lambda d: by_css(d, "#searches") or by_css(d, "#empty"))
    browser.get(server.url + "/#/submit")
    Select(until(browser, lambda d: (by_css(d, "#examples option[value='digits-demo.yaml']") or [None])[0])
           .find_element("xpath", "..")).select_by_value("digits-demo.yaml")
    spec = until(browser, lambda d: d.find_element("id", "spec").get_property("value"))
    assert spec == DEMO_SPEC.read_text()
    edited = spec.replace("max_full_evaluations: 60", "max_full_evaluations: 2")
    assert edited != spec
    textarea = browser.find_element("id", "spec")
    browser.execute_script("arguments[0].value = arguments[1]", textarea, edited)  # as a paste would leave it
    browser.find_element("id", "submit").click()
    until(browser, lambda d: d.current_url.split("#")[-1].startswith("/search/"))
    search_id = browser.current_url.split("#/search/")[-1]

    wait_for((server.runs / search_id / "fault-waiting").exists)  # the job is held mid-search
    until(browser, lambda d: d.find_element("id", "view").get_attribute("data-state") == "running")
    assert by_css(browser, "#search-state .state-running")
    assert by_css(browser, "#actions button.danger")  # Cancel is offered while it runs
    (server.runs / search_id / "fault-release").touch()
    until(browser, lambda d: d.find_element("id", "view").get_attribute("data-state") == "done")

    document = server.get(f"/v1/searches/{search_id}/pareto").json()
    until(browser, lambda d: d.execute_script(
        "const c = window.autocompressDashboard.charts; return c && c.bytes && c.bytes.plotted") is not None)
    plotted = browser.execute_script("""
        const u = window.autocompressDashboard.charts.bytes;
        const out = {};
        u.series.forEach((s, i) => { if (i > 0) out[s.label] = [u.data[i][0], u.data[i][1]]; });
        return {plotted: u.plotted, series: out, inside: Object.values(u.plotted).every(s => s.x.every((x, i) => {
            const px = u.valToPos(x, 'x'), py = u.valToPos(s.y[i], 'y');
            return px >= 0 && px <= u.bbox.width / uPlot.pxRatio && py >= 0 && py <= u.bbox.height / uPlot.pxRatio; }))};
    """)
    expected = {"feasible": [p for p in document["points"] if p["feasible"]],
                "infeasible": [p for p in document["points"] if not p["feasible"]],
                "near": document["near_misses"], "stopped": document["early_stopped"]}
    total = 0
    for key, entries in expected.items():
        got = plotted["plotted"].get(key, {"x": [], "y": [], "ids": []})
        accuracy = "accuracy_estimate" if key == "stopped" else "accuracy"
        assert got["ids"] == [p["id"] for p in entries], key
        assert got["x"] == [p["memory_bytes"] for p in entries], key
        assert got["y"] == pytest.approx([p[accuracy] for p in entries], abs=0, rel=0), key
        total += len(got["ids"])
    assert total == len(document["points"]) + len(document["near_misses"]) + len(document["early_stopped"]) >= 1
    # what uPlot itself draws is those same coordinates (one series per kind, labelled with its count)
    drawn = sorted((x, y) for xs, ys in plotted["series"].values() for x, y in zip(xs, ys))
    assert drawn == sorted((x, y) for s in plotted["plotted"].values() for x, y in zip(s["x"], s["y"]))
    assert plotted["inside"]  # every point lies within the plotting area
    rows = by_css(browser, "#points tbody tr")
    assert len(rows) == len(document["points"])

    point = document["points"][0]["id"]
    by_css(browser, f"#points button.download[data-point='{point}']")[0].click()
    target = browser.downloads / f"{search_id}-{point}.safetensors"
    wait_for(lambda: target.is_file() and not list(browser.downloads.glob("*.crdownload")))
    api_model = server.get(f"/v1/searches/{search_id}/points/{point}/model")
    assert api_model.status_code == 200 and target.read_bytes() == api_model.content

    next(b for b in by_css(browser, "#actions button") if b.text == "Open report").click()
    frame = until(browser, lambda d: (by_css(d, "#report-frame") or [None])[0])
    assert frame.get_attribute("sandbox") == ""  # no scripts, an opaque origin
    browser.switch_to.frame(frame)
    assert until(browser, lambda d: "Pareto points" in d.find_element("tag name", "body").text)
    assert browser.execute_script("return getComputedStyle(document.body).fontFamily").startswith("system-ui")
    browser.switch_to.default_content()
    no_script_ran(browser)


def test_hostile_names_are_shown_as_text_and_no_script_runs(serve, browser, tmp_path):
    """A stored run whose spec's name is markup (written into the runs folder by hand, as the
    API refuses such a name) is listed as that text; submitting such a spec shows the
    server's refusal inline, also as text. No alert, no script refused or run."""
    settled_run(tmp_path / "runs", "hostile-1", XSS)
    server = serve()
    sign_in(browser, server)
    link = until(browser, lambda d: (by_css(d, "a.search-link") or [None])[0])
    assert link.text == XSS
    assert not by_css(browser, "img")  # the markup was not parsed
    link.click()
    until(browser, lambda d: d.find_element("id", "search-name").text == XSS)
    assert not by_css(browser, "img")

    browser.get(server.url + "/#/submit")
    textarea = until(browser, lambda d: (by_css(d, "#spec") or [None])[0])
    browser.execute_script("arguments[0].value = arguments[1]", textarea,
                           yaml.safe_dump({**make_spec_data(), "name": XSS}))
    browser.find_element("id", "submit").click()
    issue = until(browser, lambda d: (by_css(d, "#spec-errors li.issue") or [None])[0])
    assert issue.find_element("css selector", ".loc").text == "name"
    assert not by_css(browser, "img")
    no_script_ran(browser)


def test_a_wrong_token_shows_an_error_page_and_fetches_no_run_data(serve, browser, tmp_path):
    settled_run(tmp_path / "runs", "secret-search-1", "secret-search")
    server = serve()
    sign_in(browser, server, token="not-the-token")
    refused = until(browser, lambda d: (by_css(d, "#refused") or [None])[0])
    assert "refused the token" in refused.text
    log = server.runs.parent / f"server-{server.port}.log"
    wait_for(lambda: '"GET /v1/policy HTTP/1.1" 401' in log.read_text())
    asked = [line.split('"')[1] for line in log.read_text().splitlines() if '"GET /' in line or '"POST /' in line]
    assert [a for a in asked if "/v1/" in a] == ["GET /v1/policy HTTP/1.1"], asked  # the token check, nothing else
    assert "secret-search" not in browser.page_source
    assert browser.execute_script("return sessionStorage.getItem('autocompress.token')") is None
    assert "not-the-token" not in browser.current_url and "not-the-token" not in log.read_text()
    assert not browser.get_cookies()
    no_script_ran(browser)


def test_a_bad_spec_shows_each_error_inline_with_its_field_path(serve, browser):
    server = serve()
    sign_in(browser, server)
    until(browser, lambda d: by_css(d, "#searches") or by_css(d, "#empty"))
    bad = make_spec_data(**{"constraints.accuracy.max_drop": -1, "data.calibration.size": "many",
                            "strategy": {"name": "no-such-strategy"}})
    expected = httpx.post(server.url + "/v1/searches", json=bad, headers=AUTH, timeout=HANG_GUARD)
    assert expected.status_code == 422
    issues = expected.json()["detail"]
    assert len(issues) >= 3
    browser.get(server.url + "/#/submit")
    textarea = until(browser, lambda d: (by_css(d, "#spec") or [None])[0])
    browser.execute_script("arguments[0].value = arguments[1]", textarea, yaml.safe_dump(bad))
    browser.find_element("id", "submit").click()
    until(browser, lambda d: by_css(d, "#spec-errors li.issue"))
    shown = [(li.find_element("css selector", ".loc").text, li.find_element("css selector", ".msg").text)
             for li in by_css(browser, "#spec-errors li.issue")]
    assert shown == [(i["loc"] if isinstance(i["loc"], str) else ".".join(map(str, i["loc"])), i["msg"])
                     for i in issues]  # the API's own messages, in its order
    assert not server.get("/v1/searches").json()["searches"]  # nothing was submitted
    no_script_ran(browser)


def test_the_list_page_renders_two_hundred_runs(serve, browser, tmp_path, cli):
    """200 runs in the store (copies of one finished search) are all listed, with their
    progress and best point; the filter narrows them. Its load time is measured by
    experiments/bench/dashboard.py, not here."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(make_spec_data(**{"budget.max_full_evaluations": 2})))
    source = tmp_path / "finished"
    result = cli("search", str(spec), "--run-dir", str(source))
    assert result.returncode == 0, result.stderr
    from dashboard import copy_runs  # (experiments/bench, on the path by the browser fixture)

    copy_runs(source, tmp_path / "runs", 200)
    server = serve()
    sign_in(browser, server)
    until(browser, lambda d: len(by_css(d, "#searches tbody tr")) == 200)
    assert browser.find_element("id", "count").text == "200 of 200"
    assert all(row.text for row in by_css(browser, "#searches tbody tr td:nth-child(5)"))
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "state-filter")).select_by_value("running")
    until(browser, lambda d: d.find_element("id", "count").text == "0 of 200")
    no_script_ran(browser)
