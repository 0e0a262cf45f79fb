"""Service under load: concurrent submissions, restarts, hostile documents.

A real ``autocompress serve`` on a loopback port (``--max-concurrent 2``) gets, from
one run:

1. alias bombs (about 1 KB each, several at once) while another client polls
   ``/healthz``: how long a bomb takes to be refused, how long ``/healthz`` waits;
2. N tiny searches submitted at once from N threads, with a client polling their
   status the whole time; the service is restarted once with SIGTERM and once with
   SIGKILL while searches run and wait. A watcher counts the search drivers alive (it
   samples the process table); at the end every run store is read back: each search
   must be done in exactly one session, no candidate evaluated twice;
3. the list and status endpoints over a runs folder of ``--runs`` finished searches
   (copies of the ones above): latency percentiles.

Only loopback addresses are used; everything stops by itself.

    python experiments/bench/service_load.py [--searches 20] [--runs 200] [--write]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from _results import publish
from autocompress.engine import RunStore

TINY = {
    "name": "load", "model": {"family": "spikingjelly_spikformer", "args": {
        "T": 2, "in_channels": 1, "image_size": 16, "patch_size": 4, "num_classes": 10, "embed_dims": 16,
        "num_heads": 2, "mlp_ratio": 2.0, "depths": 1}},
    "data": {"dataset": "digits", "image_size": 16, "validation": {"limit": 40}, "calibration": {"size": 8}},
    "constraints": {"accuracy": {"max_drop": 1.5}, "memory": {"min_saving": 0.5}},
    "space": {"granularity": "network"}, "budget": {"max_full_evaluations": 4}, "execution": {"device": "cpu"},
}


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else float("nan")


class Service:
    def __init__(self, runs: Path, token: str):
        self.runs, self.token = runs, token
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        """Start and wait until /healthz answers; seconds it took."""
        begin = time.perf_counter()
        log = open(self.runs.parent / "server.log", "a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autocompress", "serve", "--port", str(self.port), "--runs-dir", str(self.runs),
             "--max-concurrent", "2"], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "AUTOCOMPRESS_TOKEN": self.token})
        while True:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited; see {self.runs.parent / 'server.log'}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - begin
            except httpx.HTTPError:
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        self.process.send_signal(sig)
        self.process.wait(timeout=60)

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=60, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return httpx.post(self.url + path, headers={**self.headers, **kw.pop("headers", {})}, timeout=60, **kw)


def drivers(runs: Path) -> int:
    """Run directories with a live search driver (``autocompress search|resume``). A
    process the driver forks (to run a helper program) shows the driver's command line
    until it execs; it is the same driver, so run directories are counted, not pids."""
    found: dict[int, tuple[int, str]] = {}
    for process in psutil.process_iter(["pid", "ppid", "cmdline"]):
        command = process.info["cmdline"] or []
        if "autocompress" in command and ("search" in command or "resume" in command):
            run = next((c for c in command if c.startswith(str(runs))), None)
            if run is not None:
                found[process.info["pid"]] = (process.info["ppid"], str(Path(run).relative_to(runs)).split("/")[0])
    return len({run for ppid, run in found.values() if ppid not in found})


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    alive = most = 0
    for _, step in events:
        alive += step
        most = max(most, alive)
    return most


def bombs(service: Service, count: int) -> dict:
    latencies, answers, stop = [], [], threading.Event()

    def poll() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                begin = time.perf_counter()
                client.get(service.url + "/healthz", timeout=30)
                latencies.append(time.perf_counter() - begin)
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    while not latencies:  # polling before the first bomb goes
        time.sleep(0.005)
    body = alias_bomb()

    def send(_i: int) -> tuple[int, float]:
        begin = time.perf_counter()
        answer = service.post("/v1/searches", content=body, headers={"content-type": "application/yaml"})
        return answer.status_code, time.perf_counter() - begin

    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(send, range(count)))
    time.sleep(0.1)  # and a little after
    stop.set()
    poller.join()
    return {"bytes": len(body), "codes": sorted({code for code, _ in answers}),
            "slowest_answer": max(s for _, s in answers), "healthz_p50": percentile(latencies, 50),
            "healthz_max": max(latencies), "healthz_calls": len(latencies)}


def searches(service: Service, count: int) -> dict:
    status_latency: list[float] = []
    peak, stop = [0], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], drivers(service.runs))
            time.sleep(0.05)

    def submit(i: int) -> str:
        answer = service.post("/v1/searches", json={**TINY, "name": f"load{i:02d}"})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    begin = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        ids = list(pool.map(submit, range(count)))
    restarts = {}

    def states() -> dict[str, str]:
        found = {}
        for search_id in ids:
            start = time.perf_counter()
            try:
                found[search_id] = service.get(f"/v1/searches/{search_id}").json()["state"]
                status_latency.append(time.perf_counter() - start)
            except httpx.HTTPError:
                found[search_id] = "unreachable"
        return found

    while True:
        current = states()
        done = sum(state == "done" for state in current.values())
        for sig, after in ((signal.SIGTERM, count // 4), (signal.SIGKILL, count // 2)):
            if sig not in restarts and done >= after and "queued" in current.values():
                service.stop(sig)
                restarts[sig] = {"done_before": done, "downtime": service.start()}
        if all(state in ("done", "failed", "interrupted", "cancelled") for state in current.values()):
            break
        time.sleep(0.2)
    wall = time.perf_counter() - begin
    stop.set()
    watcher.join()
    sessions_ok = duplicates = 0
    jobs, sessions = [], []
    for search_id in ids:
        with RunStore.open_reader(service.runs / search_id) as store:
            if [s["state"] for s in store.sessions()] == ["done"]:
                sessions_ok += 1
            sessions += [(s["started_at"], s["ended_at"]) for s in store.sessions()]
            fulls = [r.result.candidate_id for r in store.records(("full",))]
            duplicates += len(fulls) - len(set(fulls))
        started = json.loads((service.runs / search_id / "job.json").read_text())["started_at"]
        ended = json.loads((service.runs / search_id / "exit.json").read_text())["ended_at"]
        jobs.append((started, ended))
    final = states()
    return {"ids": ids, "done": sum(s == "done" for s in final.values()), "one_session": sessions_ok,
            "duplicates": duplicates, "peak_drivers": peak[0], "peak_jobs": most_at_once(jobs),
            "peak_sessions": most_at_once(sessions), "wall": wall, "restarts": restarts,
            "status_p50": percentile(status_latency, 50), "status_p99": percentile(status_latency, 99),
            "status_calls": len(status_latency)}


def listing(service: Service, ids: list[str], runs: int) -> dict:
    """Copies of the finished runs, then list and status latencies."""
    service.stop()
    for i in range(runs - len(ids)):
        source = service.runs / ids[i % len(ids)]
        target = service.runs / f"copy{i:04d}-20260101-000000-{secrets.token_hex(3)}"
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.png", "report.html", "exports"))
        (target / "submitted.json").write_text(json.dumps({"id": target.name, "submitted_at": 1e9 + i}))
    service.start()
    every = [p.name for p in service.runs.iterdir() if (p / "request.json").is_file()]
    page, one = [], []
    for i in range(60):
        begin = time.perf_counter()
        assert service.get("/v1/searches", params={"limit": 50}).status_code == 200
        page.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        assert service.get(f"/v1/searches/{every[i % len(every)]}").status_code == 200
        one.append(time.perf_counter() - begin)
    return {"runs": len(every), "list_p50": percentile(page, 50), "list_p99": percentile(page, 99),
            "status_p50": percentile(one, 50), "status_p99": percentile(one, 99)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=20)
    parser.add_argument("--bombs", type=int, default=10)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--write", action="store_true", help="rewrite this section of RESULTS.md")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="autocompress-load-"))
    service = Service(folder / "runs", secrets.token_hex(24))
    try:
        service.start()
        single = bombs(service, 1)
        bomb = bombs(service, args.bombs)
        print(f"bombs: one {single}, {args.bombs} at once {bomb}", file=sys.stderr)
        load = searches(service, args.searches)
        print(f"searches: { {k: v for k, v in load.items() if k != 'ids'} }", file=sys.stderr)
        listed = listing(service, load["ids"], args.runs)
        print(f"listing: {listed}", file=sys.stderr)
    finally:
        if service.process is not None and service.process.poll() is None:
            service.stop()
        for job in (folder / "runs").glob("*/job.json"):
            try:
                os.killpg(json.loads(job.read_text())["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError, KeyError, TypeError, ValueError):
                pass
        shutil.rmtree(folder, ignore_errors=True)
    term, kill = load["restarts"].get(signal.SIGTERM, {}), load["restarts"].get(signal.SIGKILL, {})
    ms = lambda seconds: f"{seconds * 1000:.0f} ms"  # noqa: E731
    body = "\n".join([
        f"Alias bombs of {bomb['bytes']} bytes (9 levels of 9 aliases: 387 million values if expanded), one alone "
        f"and {args.bombs} at once, while another client polled `/healthz` every 5 ms:", "",
        f"| what | one bomb | {args.bombs} at once |", "|---|---:|---:|",
        f"| status of every bomb | {', '.join(map(str, single['codes']))} | {', '.join(map(str, bomb['codes']))} |",
        f"| slowest bomb answered in | {ms(single['slowest_answer'])} | {ms(bomb['slowest_answer'])} |",
        f"| `/healthz` p50 / slowest meanwhile | {ms(single['healthz_p50'])} / {ms(single['healthz_max'])} | "
        f"{ms(bomb['healthz_p50'])} / {ms(bomb['healthz_max'])} |",
        f"| `/healthz` calls meanwhile | {single['healthz_calls']} | {bomb['healthz_calls']} |", "",
        f"{args.searches} tiny searches submitted at once (`--max-concurrent 2`), the service restarted with "
        f"SIGTERM after {term.get('done_before', '?')} were done and with SIGKILL after "
        f"{kill.get('done_before', '?')}:", "",
        "| what | measured |", "|---|---:|",
        f"| searches done | {load['done']} of {args.searches} |",
        f"| done in exactly one session | {load['one_session']} of {args.searches} |",
        f"| candidates fully evaluated twice | {load['duplicates']} |",
        f"| most search drivers alive at once (process table, sampled every 50 ms) | {load['peak_drivers']} |",
        f"| most jobs alive at once (from their start to the exit their supervisor recorded) | "
        f"{load['peak_jobs']} |",
        f"| most driver sessions overlapping (run stores) | {load['peak_sessions']} |",
        f"| wall time for all | {load['wall']:.0f} s |",
        f"| service back after SIGTERM / SIGKILL (to `/healthz`) | {term.get('downtime', float('nan')):.1f} s / "
        f"{kill.get('downtime', float('nan')):.1f} s |",
        f"| `GET /v1/searches/{{id}}` during the run, p50 / p99 ({load['status_calls']} calls) | "
        f"{ms(load['status_p50'])} / {ms(load['status_p99'])} |", "",
        f"Over a runs folder of {listed['runs']} finished searches:", "",
        "| what | p50 | p99 |", "|---|---:|---:|",
        f"| `GET /v1/searches?limit=50` | {ms(listed['list_p50'])} | {ms(listed['list_p99'])} |",
        f"| `GET /v1/searches/{{id}}` | {ms(listed['status_p50'])} | {ms(listed['status_p99'])} |",
    ])
    publish("service_load", "Service under load", "python experiments/bench/service_load.py --write", body,
            write=args.write)
    ok = (load["done"] == load["one_session"] == args.searches and load["duplicates"] == 0
          and max(load["peak_drivers"], load["peak_jobs"], load["peak_sessions"]) <= 2)
    return 0 if ok and bomb["codes"] == single["codes"] == [422] else 1


if __name__ == "__main__":
    sys.exit(main())
