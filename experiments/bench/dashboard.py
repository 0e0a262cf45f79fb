"""The dashboard against a real `autocompress serve` in headless Chromium: how fast the list
page loads with 200 runs in the store, and the README's screenshots from a real run.

    python experiments/bench/dashboard.py [--runs 200] [--repeats 5] [--screenshots] [--write]

Needs Debian's chromium and chromium-driver. It starts a service on loopback (the digits
reference model from tests/fixtures, so nothing is trained), runs the digits demo search
through the API as submitted from the page (greedy, the spec as shipped) and a tpe one, and
makes ``--runs`` copies of the finished search in a second service's runs folder. The load
time is the browser's own clock: from the start of navigation (performance.timeOrigin) to the
moment the table holds every run, with the token already in the tab's sessionStorage: the
first load after the service started, then ``--repeats`` reloads. ``--screenshots`` writes docs/images/dashboard-*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from _results import DIGITS_SPEC, publish

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "docs" / "images"
TOKEN = "dashboard-benchmark-token-0123456789abcdef"


def chromium_driver(downloads: Path | None = None, *, width: int = 1400, height: int = 1000,
                    browser: str | None = None, driver: str | None = None, profile: Path | None = None):
    """Headless Chromium under Selenium, from the system's chromium and chromedriver (never a
    downloaded build): console messages kept, downloads to ``downloads`` without asking."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser or shutil.which("chromium") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}", "--hide-scrollbars"):
        options.add_argument(argument)
    if profile is not None:
        options.add_argument(f"--user-data-dir={profile}")
    if downloads is not None:
        options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                                  "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver or shutil.which("chromedriver") or "chromedriver"),
                            options=options)


def copy_runs(source: Path, runs: Path, count: int) -> None:
    """``count`` copies of the finished run ``source`` as searches a service knows (each with
    its request, its submission time and its ended job)."""
    runs.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        run_dir = runs / f"copy-{i:03d}"
        shutil.copytree(source, run_dir, ignore=shutil.ignore_patterns("job.lock", "exports"))
        request = json.loads((source / "request.json").read_text()) if (source / "request.json").is_file() else {}
        (run_dir / "request.json").write_text(json.dumps({**request, "name": f"copy-{i:03d}"}))
        (run_dir / "submitted.json").write_text(json.dumps({"id": run_dir.name, "submitted_at": 1e9 + i}))
        (run_dir / "job.json").write_text(json.dumps({"ticket": "t", "command": "search", "exit_code": 0,
                                                      "started_at": 1e9 + i, "ended_at": 1e9 + i + 60}))


class Service:
    """``autocompress serve`` on a free loopback port, its jobs finding the digits reference."""

    def __init__(self, runs: Path, cache: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(runs.parent / f"serve-{self.port}.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autocompress", "serve", "--port", str(self.port), "--runs-dir", str(runs)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "AUTOCOMPRESS_TOKEN": TOKEN, "AUTOCOMPRESS_CACHE": str(cache)})
        import httpx

        for _ in range(600):
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("the service did not come up")

    def call(self, method: str, path: str, **kw):
        import httpx

        return httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60, **kw)

    def wait(self, search_id: str) -> dict:
        while True:
            status = self.call("GET", f"/v1/searches/{search_id}").json()
            if status["state"] not in ("queued", "running"):
                return status
            time.sleep(1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def sign_in(driver, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url + "/")
    WebDriverWait(driver, 60).until(lambda d: d.find_elements("id", "token"))[0].send_keys(TOKEN)
    driver.find_element("css selector", "#sign-in button[type=submit]").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements("id", "searches") or d.find_elements("id", "empty"))


def list_load_ms(driver, url: str, runs: int) -> float:
    """One reload of the list page (the token already in the tab): milliseconds from the start
    of navigation until the table holds ``runs`` rows, on the browser's clock."""
    driver.get(url + "/#/")
    driver.refresh()
    for _ in range(100000):
        ms = driver.execute_script(
            "return document.querySelectorAll('#searches tbody tr').length === arguments[0] ? performance.now() : null",
            runs)
        if ms is not None:
            return float(ms)
        time.sleep(0.005)
    raise RuntimeError("the list never showed every run")


def screenshots(driver, service: Service, search_id: str) -> list[Path]:
    from selenium.webdriver.support.ui import WebDriverWait

    IMAGES.mkdir(parents=True, exist_ok=True)
    shots = []
    driver.set_window_size(1400, 700)
    driver.get(service.url + "/#/")
    WebDriverWait(driver, 60).until(lambda d: d.find_elements("css selector", "#searches tbody tr"))
    shots.append(IMAGES / "dashboard-searches.png")
    driver.save_screenshot(str(shots[-1]))
    driver.set_window_size(1400, 2200)
    driver.get(service.url + f"/#/search/{search_id}")
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "const c = (window.autocompressDashboard || {}).charts; return c && c.bytes ? true : false"))
    time.sleep(0.5)  # the plots' fonts
    shots.append(IMAGES / "dashboard-search.png")
    driver.save_screenshot(str(shots[-1]))
    driver.set_window_size(1400, 1100)
    driver.get(service.url + "/#/submit")
    spec = WebDriverWait(driver, 60).until(lambda d: d.find_elements("id", "spec"))[0]
    bad = DIGITS_SPEC.read_text().replace("max_drop: 1.5", "max_drop: -1").replace("size: 64", "size: many")
    driver.execute_script("arguments[0].value = arguments[1]", spec, bad)
    driver.find_element("id", "submit").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements("css selector", "#spec-errors li.issue"))
    shots.append(IMAGES / "dashboard-submit.png")
    driver.save_screenshot(str(shots[-1]))
    return shots


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--screenshots", action="store_true", help="write docs/images/dashboard-*.png")
    parser.add_argument("--write", action="store_true", help="update experiments/bench/RESULTS.md")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autocompress-dashboard-") as folder:
        folder = Path(folder)
        cache = folder / "cache"
        shutil.copytree(REPO / "tests" / "fixtures" / "references", cache / "references")
        (folder / "live").mkdir()
        live = Service(folder / "live" / "runs", cache)
        driver = chromium_driver(profile=folder / "profile")
        try:
            spec = yaml.safe_load(DIGITS_SPEC.read_text())
            demo = live.call("POST", "/v1/searches", json=spec).json()["id"]
            tpe = live.call("POST", "/v1/searches", json={**spec, "name": "digits-tpe", "strategy": {
                "name": "tpe", "seed": 0}, "budget": {"max_full_evaluations": 20}}).json()["id"]
            search_seconds = time.perf_counter()
            status = live.wait(demo)
            live.wait(tpe)
            search_seconds = time.perf_counter() - search_seconds
            print(f"searches done: {demo} {status['state']} ({search_seconds:.0f} s)", file=sys.stderr)
            sign_in(driver, live.url)
            shots = screenshots(driver, live, demo) if args.screenshots else []
            source = folder / "live" / "runs" / demo
        finally:
            driver.quit()
            live.stop()
        (folder / "many").mkdir()
        copy_runs(source, folder / "many" / "runs", args.runs)
        many = Service(folder / "many" / "runs", cache)
        driver = chromium_driver(profile=folder / "profile-many")
        try:
            driver.get(many.url + "/")  # the token straight into the tab: the first list load is the cold one
            driver.execute_script("sessionStorage.setItem('autocompress.token', arguments[0])", TOKEN)
            cold = list_load_ms(driver, many.url, args.runs)
            times = [list_load_ms(driver, many.url, args.runs) for _ in range(args.repeats)]
            api = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                assert len(many.call("GET", f"/v1/searches?limit={min(200, args.runs)}").json()["searches"]) == min(200, args.runs)
                api.append(1000 * (time.perf_counter() - t0))
        finally:
            driver.quit()
            many.stop()
    lines = [f"The list page with {args.runs} runs in the store (copies of the digits demo search, done), headless "
             "Chromium against `autocompress serve` on loopback, the token already given; from the start of "
             "navigation to a table holding every run: the first load after the service started (it reads every "
             f"run store), then {args.repeats} reloads (a settled search's status is then answered from memory "
             "until one of its files changes):", "",
             "| runs | first load | reloads, median | reloads, slowest | `GET /v1/searches?limit=200` alone, median |",
             "|---:|---:|---:|---:|---:|",
             f"| {args.runs} | {cold:.0f} ms | {statistics.median(times):.0f} ms | {max(times):.0f} ms | "
             f"{statistics.median(api):.0f} ms |",
             "", "Target (issue 32): under 1 s here."]
    if shots:
        lines += ["", "Screenshots (from the real searches above: " + ", ".join(f"`docs/images/{p.name}`" for p in shots)
                  + ")."]
    lines += ["", f"({time.perf_counter() - start:.0f} s in all)"]
    publish("dashboard", "The dashboard: the list page with many runs", "python experiments/bench/dashboard.py "
            "--screenshots --write", "\n".join(lines), write=args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
