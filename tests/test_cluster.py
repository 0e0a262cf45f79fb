"""A real two-node Ray cluster on this machine (tests/ray_nodes.py), under faults: a search
with one worker on each node loses a node mid-search, takes a replacement when a node
joins, and ends with the uninterrupted run's journal and Pareto set; a killed driver
resumes on the same cluster; a stopped head gives a clear error. Every process the test
started is gone at its end."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from autocompress.engine import RunOptions, start_search
from autocompress.engine.store import RunStore
from autocompress.spec import load_spec
from conftest import FIXTURES, HANG_GUARD, REPO, make_spec_data, wait_for
from ray_nodes import RayNodes

_spec = importlib.util.spec_from_file_location("kill_and_resume", REPO / "experiments" / "engine" / "kill_and_resume.py")
kill_and_resume = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_and_resume)


def digits_image_folder(root, per_class: int = 16) -> tuple[float, float]:
    """The digits test split as 16x16 grayscale PNGs in class folders (an image folder the
    tiny trained model reads as it was trained), and the train split's mean and std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    train, test, _, labels = train_test_split(images, digits.target, test_size=0.2, random_state=0,
                                              stratify=digits.target)
    up = lambda a: F.interpolate(torch.from_numpy(a).unsqueeze(1), size=(16, 16), mode="bilinear",  # noqa: E731
                                 align_corners=False)
    pixels = (up(test)[:, 0].clamp(0, 1) * 255).round().byte().numpy()
    counts: dict[int, int] = {}
    for image, label in zip(pixels, labels):
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            (root / str(label)).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="L").save(root / str(label) / f"{counts[label]:03d}.png")
    whole = up(train)
    return float(whole.mean()), float(whole.std())


def cluster_spec(tmp_path) -> tuple:
    images = tmp_path / "images"
    mean, std = digits_image_folder(images)
    data = make_spec_data(**{
        "model.args.depths": 2, "model.args.embed_dims": 32, "model.checkpoint": str(FIXTURES / "tiny" / "spikformer.pt"),
        "data.dataset": "imagefolder", "data.root": str(images), "data.image_size": 16,
        "data.classes": [str(i) for i in range(10)],
        "data.transform": {"crop_fraction": 1.0, "interpolation": "bilinear", "mean": [mean], "std": [std]},
        "data.calibration.size": 8, "data.validation.limit": None, "data.batch_size": 8,
        "evaluation.shard_images": 16, "space.granularity": "network", "strategy": {"name": "greedy", "seed": 0},
        "constraints.accuracy.max_drop": 5.0, "constraints.accuracy.confidence": None,
        "budget.max_full_evaluations": 6, "execution.workers": 2})
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data))
    return spec, images


def search(spec, run, cluster, *extra, env=None):
    return subprocess.Popen([sys.executable, "-m", "autocompress", "search", str(spec), "--run-dir", str(run),
                             "--ray-address", cluster.address, *extra], env=env or cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finished(process) -> str:
    out, _ = process.communicate(timeout=HANG_GUARD)
    assert process.returncode == 0, out
    return out


def fulls(run) -> int:
    return kill_and_resume._stored_fulls(run)


def workers(run) -> dict:
    with RunStore.open_reader(run) as store:
        return {w["name"]: w for w in store.workers()}


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # no two Ray tests at once
def test_a_search_on_two_nodes_survives_a_lost_node_a_killed_driver_and_reports_a_stopped_head(tmp_path):
    spec, _images = cluster_spec(tmp_path)
    cluster = RayNodes(tmp_path / "cluster")
    try:
        head = cluster.head("a", dashboard=False)
        second = cluster.add("b")

        # the reference: the same search in this process, no Ray (a shard's result is the same wherever it runs)
        whole = tmp_path / "uninterrupted"
        start_search(load_spec(spec), run_dir=whole, options=RunOptions(workers=0), say=lambda _m: None)

        # lose node b mid-search: its worker is held in a shard, node a's is held as it takes the shard again
        lost = tmp_path / "lost-node"
        process = search(spec, lost, cluster)
        wait_for(lambda: fulls(lost) >= 2 or process.poll() is not None)
        (lost / "fault-arm-b").touch()
        wait_for(lambda: (lost / "fault-waiting-b").exists() or process.poll() is not None)
        assert process.poll() is None, process.communicate()[0]
        assert len({w["node"] for w in workers(lost).values()}) == 2  # one worker on each node
        with RunStore.open_reader(lost) as store:  # validations sharded over both
            assert any(len(set(r.worker.split(","))) == 2 for r in store.records(("full",)))
        built = {}
        for node in (head, second):  # each node decoded the validation images once, into its own cache
            (folder,) = [f for f in (node.cache / "decoded").iterdir() if f.is_dir()]
            built[node.name] = (folder / "images.u8").stat().st_ino
        (lost / "fault-arm-a").touch()
        cluster.kill_raylet(second)
        wait_for(lambda: workers(lost)["worker-1"]["state"] == "starting")  # the driver asked for a replacement
        wait_for(lambda: (lost / "fault-waiting-a").exists())  # and node a took a shard (the lost one, or the next)
        died = workers(lost)["worker-1"]
        assert died["state"] == "starting" and process.poll() is None  # no room for it: the search goes on
        cluster.add("c")  # room again: the replacement starts there
        wait_for(lambda: workers(lost)["worker-1"]["state"] == "idle")
        (lost / "fault-release-a").touch()
        out = finished(process)
        assert "1 retried after a worker died" in out
        document = json.loads((lost / "pareto.json").read_text())
        assert document["statistics"]["retries"] == 1 and document["statistics"]["workers_replaced"] == 1
        assert kill_and_resume._journal(lost) == kill_and_resume._journal(whole)
        assert kill_and_resume._front(lost) == kill_and_resume._front(whole)
        assert kill_and_resume._duplicates(lost) == []
        assert workers(lost)["worker-1"]["node"] not in {died["node"]}  # the replacement runs on node c
        # what the cluster's workers measured (the baseline, each candidate over its shards), this process measured
        assert document["baseline"] == json.loads((whole / "pareto.json").read_text())["baseline"]

        # kill the driver mid-search and resume on the same cluster
        killed = tmp_path / "killed-driver"
        process = search(spec, killed, cluster, "--workers", "1")  # (one worker: the driver is what is killed)
        wait_for(lambda: fulls(killed) >= 3 or process.poll() is not None)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        resumed = subprocess.run([sys.executable, "-m", "autocompress", "resume", str(killed), "--ray-address",
                                  cluster.address], env=cluster.env, capture_output=True, text=True,
                                 timeout=HANG_GUARD)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert kill_and_resume._journal(killed) == kill_and_resume._journal(whole)
        assert kill_and_resume._front(killed) == kill_and_resume._front(whole)
        (folder,) = [f for f in (head.cache / "decoded").iterdir() if f.is_dir()]
        assert (folder / "images.u8").stat().st_ino == built[head.name]  # node a built its cache once, in all

        # stop the head: a search that joins it gets a clear error and exit 2
        cluster.stop(head)
        done = subprocess.run([sys.executable, "-m", "autocompress", "search", str(spec), "--run-dir",
                               str(tmp_path / "no-head"), "--ray-address", cluster.address], env=cluster.env,
                              capture_output=True, text=True, timeout=HANG_GUARD)
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"cannot connect to Ray at '{cluster.address}': nothing answers there" in done.stderr, done.stderr
    finally:
        cluster.close()
    assert cluster.wait_gone() == []


def ray_jobs(cluster) -> dict[str, str]:
    """Every job the cluster's job server knows: its submission id and status (Ray's REST API,
    with the cluster's token)."""
    listed = httpx.get(f"{cluster.dashboard}/api/jobs/", timeout=30,
                       headers={"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"})
    assert listed.status_code == 200, listed.text
    return {job["submission_id"]: job["status"] for job in listed.json() if job.get("submission_id")}


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # no two Ray tests at once
def test_the_service_runs_three_searches_as_ray_jobs_through_a_restart_and_a_lost_node(tmp_path):
    """The service on the two-node cluster, two searches at a time: the search whose worker
    runs on node b is held there; the service is SIGKILLed and started again (it adopts the
    running jobs, launches the queued one, starts nothing twice); node b is lost and a node
    joins; every search ends done, with one Ray job and one session each. Then a running
    search is cancelled (its Ray job stopped), and the GPU check's Ray rows run in their dry
    run on a local Ray beside the cluster: a search on two actors and an epoch of
    fine-tuning on a Ray Train worker."""
    from conftest import Server

    cluster = RayNodes(tmp_path / "cluster")
    runs = tmp_path / "runs"
    runs.mkdir()
    servers = []
    try:
        cluster.head("a")
        second = cluster.add("b")
        serve = ("--ray-dashboard", cluster.dashboard, "--max-concurrent", "2")
        servers.append(Server(runs, *serve, env=cluster.env))
        ids = []
        for seed in range(3):
            spec = make_spec_data(**{"name": f"cluster-{seed}", "space.granularity": "network",
                                     "budget.max_full_evaluations": 4, "execution.workers": 1,
                                     "strategy": {"name": "random", "seed": seed},
                                     "constraints.accuracy.confidence": None})
            response = servers[0].post("/v1/searches", json=spec)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
            (runs / ids[-1] / "fault-arm-b").touch()  # the search whose worker lands on node b is held there
        wait_for(lambda: any((runs / i / "fault-waiting-b").exists() for i in ids))
        (held,) = [i for i in ids if (runs / i / "fault-waiting-b").exists()]

        servers[0].kill()  # the service dies; its Ray jobs go on
        servers.append(Server(runs, *serve, env=cluster.env))
        listed = {s["id"]: s["state"] for s in servers[1].get("/v1/searches").json()["searches"]}
        assert listed[held] == "running", listed

        cluster.kill_raylet(second)  # the held search loses its only worker
        wait_for(lambda: workers(runs / held)["worker-0"]["state"] == "starting")
        cluster.add("c")  # room again: its replacement starts there, and the search goes on
        for search_id in ids:
            status = servers[1].wait(search_id, ("done", "failed", "interrupted"), timeout=HANG_GUARD)
            assert status["state"] == "done", (search_id, status.get("error"))
        jobs = ray_jobs(cluster)
        for search_id in ids:
            assert len([j for j in jobs if j.startswith(f"autocompress-{search_id}-")]) == 1, jobs
            document = json.loads((runs / search_id / "pareto.json").read_text())
            assert document["statistics"]["sessions"] == 1 and document["statistics"]["full_evaluations"] == 4
            assert kill_and_resume._duplicates(runs / search_id) == []
        document = json.loads((runs / held / "pareto.json").read_text())
        assert document["statistics"]["retries"] == 1 and document["statistics"]["workers_replaced"] == 1

        # cancel a running search: its Ray job is stopped, the search ends cancelled
        # (no Ray worker of its own: it evaluates in its job's driver, on the head, held there)
        spec = make_spec_data(**{"name": "cancelled", "space.granularity": "network", "execution.workers": 0,
                                 "budget.max_full_evaluations": 4, "constraints.accuracy.confidence": None})
        cancelled = servers[1].post("/v1/searches", json=spec).json()["id"]
        (runs / cancelled / "fault-arm-a").touch()
        wait_for((runs / cancelled / "fault-waiting-a").exists)
        assert servers[1].delete(f"/v1/searches/{cancelled}").status_code == 200
        assert servers[1].wait(cancelled, ("cancelled",), timeout=HANG_GUARD)["state"] == "cancelled"
        stopped = {j: state for j, state in ray_jobs(cluster).items() if j.startswith(f"autocompress-{cancelled}-")}
        assert list(stopped.values()) == ["STOPPED"], stopped

        # the GPU check's Ray rows (dry run: CPU actors) on a local Ray, as `--workers 2` starts one without an
        # address even with a cluster on the machine: a search on 2 actors, then a Ray Train epoch
        local = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
        checked = subprocess.run([sys.executable, "experiments/bench/gpu_check.py", "--dry-run", "--only-ray"],
                                 cwd=REPO, env=local, capture_output=True, text=True, timeout=HANG_GUARD)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        rows = [line.split(" | ") for line in checked.stdout.splitlines() if line.startswith("| ") and "---" not in line]
        assert [row[0][2:] for row in rows[1:]] == ["2 Ray actors sharing one GPU (0.5 each), a search",
                                                    "one Ray Train epoch, gloo (CPU)"], rows
        assert rows[1][1].startswith("2 full evaluations") and "worker-0, worker-1; 1 node(s)" in rows[1][2]
        assert "(done)" in rows[2][1] and "FAILED" not in checked.stdout
    finally:
        for server in servers:
            if server.process.poll() is None:
                server.kill()
        cluster.close()
    assert cluster.wait_gone() == []
