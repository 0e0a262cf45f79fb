"""The HTTP service, driven over HTTP: a real server on a loopback port, real jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
import yaml

import autocompress
from autocompress.engine import RunStore, Session
from autocompress.spec import validate_spec
from conftest import DEMO_SPEC, HANG_GUARD, Server, make_spec_data, wait_for, write_spec

def tiny(**overrides) -> dict:
    return make_spec_data(**{"space.granularity": "network", "budget.max_full_evaluations": 4, **overrides})


@pytest.mark.slow
def test_submit_the_demo_poll_fetch_pareto_and_a_model(servers, reference_cache, tmp_path):
    server = servers(env={"AUTOCOMPRESS_CACHE": str(reference_cache)})
    demo = yaml.safe_load(DEMO_SPEC.read_text())
    demo["space"]["granularity"] = "network"
    demo["budget"]["max_full_evaluations"] = 3
    created = server.post("/v1/searches", content=yaml.safe_dump(demo), headers={"content-type": "application/yaml"})
    assert created.status_code == 201, created.text
    search_id = created.json()["id"]
    assert created.headers["location"] == created.json()["url"] == f"/v1/searches/{search_id}"
    status = server.wait(search_id, ("done", "failed"))
    assert status["state"] == "done", status
    assert status["progress"]["full_evaluations"] == 3 and status["best"] is not None
    # validation as the service shows it: images read, and how many candidates were stopped early
    progress = status["progress"]
    assert 0 <= progress["early_stopped"] <= 3 and progress["validation_images"] <= 3 * 360
    assert progress["validation_images"] == 3 * 360 or progress["early_stopped"] > 0

    pareto = server.get(f"/v1/searches/{search_id}/pareto")
    assert pareto.status_code == 200
    document = pareto.json()
    assert document["format"] == "autocompress-pareto-v1" and document["baseline"]["memory_bytes"] == 661808
    assert document["statistics"]["validation"] == {"images": 360, "order_seed": 0, "shard_images": 128}
    assert len(document["early_stopped"]) == document["statistics"]["early_stopped"]
    point = next(p for p in document["points"] if p["id"] == document["best"])
    model = server.get(f"/v1/searches/{search_id}/points/{point['id']}/model")
    assert model.status_code == 200
    path = tmp_path / "model.safetensors"
    path.write_bytes(model.content)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOCOMPRESS_CACHE", str(reference_cache))
        spec = validate_spec(yaml.safe_load(DEMO_SPEC.read_text()), base_dir=DEMO_SPEC.parent)
        session = Session.open(spec, say=lambda _m: None)
    assert session.evaluate(autocompress.load(path)).accuracy == pytest.approx(point["accuracy"], abs=1e-9)

    # recovery fine-tuning, queued as a job of its own; the tuned model comes back with ?tuned=true
    bad = server.post(f"/v1/searches/{search_id}/finetune", json={"settings": {"data": {"root": "/etc"}}})
    assert bad.status_code == 422 and "data.augment and data.images_per_epoch" in bad.text
    assert server.post(f"/v1/searches/{search_id}/finetune", json={"settings": {"epochs": 10**6}}).status_code == 422
    assert server.post(f"/v1/searches/{search_id}/finetune", json={"points": ["../x"]}).status_code == 422
    assert server.get(f"/v1/searches/{search_id}/points/{point['id']}/model?tuned=true").status_code == 404
    queued = server.post(f"/v1/searches/{search_id}/finetune", json={
        "points": [point["id"]], "settings": {"epochs": 1, "data": {"images_per_epoch": 64}}})
    assert queued.status_code == 200, queued.text
    status = server.wait(search_id, ("done", "failed"))
    assert status["state"] == "done" and status["job"]["command"] == "finetune", status
    assert status["finetune"][point["id"]]["state"] == "done"
    tuned = server.get(f"/v1/searches/{search_id}/points/{point['id']}/model?tuned=true")
    assert tuned.status_code == 200
    path.write_bytes(tuned.content)
    after = server.get(f"/v1/searches/{search_id}/pareto").json()["tuned"]["finetuned"][point["id"]]
    assert session.evaluate(autocompress.load(path)).accuracy == pytest.approx(after["accuracy"], abs=1e-9)

    listing = server.get("/v1/searches").json()["searches"]
    assert [s["id"] for s in listing] == [search_id] and listing[0]["state"] == "done"
    report = server.get(f"/v1/searches/{search_id}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "data:image/png;base64," in report.text
    assert server.get(f"/v1/searches/{search_id}/points/abcdef/model").status_code == 404
    assert server.get("/v1/searches/nope").status_code == 404
    assert server.get("/openapi.json").json()["paths"].keys() >= {"/v1/searches", "/v1/searches/{search_id}/pareto"}


def test_tokens_bad_specs_and_paths_are_refused(servers, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "outside.pt").write_bytes(b"x")
    (root / "escape.pt").symlink_to(tmp_path / "outside.pt")
    server = servers("--data-roots", str(root), "--max-workers", "2")
    body = tiny()

    assert httpx.get(server.url + "/v1/searches").status_code == 401
    assert httpx.get(server.url + "/openapi.json").status_code == 401
    wrong = httpx.post(server.url + "/v1/searches", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert not [p for p in (tmp_path / "runs").iterdir() if p.is_dir()], "a refused request created a run"
    assert httpx.get(server.url + "/healthz").status_code == 200

    def refused(data, field: str) -> None:
        answer = server.post("/v1/searches", json=data)
        assert answer.status_code == 422, answer.text
        assert field in [d["loc"] for d in answer.json()["detail"]], answer.json()

    refused({**body, "constraints": {"accuracy": {"max_drop": -1}, "memory": {"min_saving": 0.5}}},
            "constraints.accuracy.max_drop")
    for checkpoint in ("../outside.pt", str(tmp_path / "outside.pt"), "escape.pt", "/etc/passwd"):
        refused({**body, "model": {**body["model"], "checkpoint": checkpoint}}, "model.checkpoint")
    refused({**body, "data": {"dataset": "imagefolder", "root": "../.."}}, "data.root")
    refused({**body, "execution": {"workers": 64}}, "execution.workers")
    refused({**body, "execution": {"ray_address": "evil:6379"}}, "execution.ray_address")
    refused({**body, "model": {"family": "custom", "factory": "subprocess:getoutput", "args": {"cmd": "id"}}},
            "model.factory")
    yaml_text = "name: x\nname: y\n"
    answer = server.post("/v1/searches", content=yaml_text, headers={"content-type": "application/yaml"})
    assert answer.status_code == 422 and "duplicate" in answer.text
    assert server.post("/v1/searches", content=b"x" * 300_000,
                       headers={"content-type": "application/json"}).status_code == 413
    assert server.post("/v1/searches", content=b"<spec/>", headers={"content-type": "text/xml"}).status_code == 415
    assert not [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]


def _driver_pid(server: Server, search_id: str) -> int:
    with RunStore.open_reader(server.runs / search_id) as store:
        return store.sessions()[-1]["pid"]


@pytest.mark.slow
def test_restart_lists_the_running_search_and_resume_completes_it(servers, tmp_path):
    """The first service's job is held in its 3rd full evaluation (fault injection), so it is
    still running when the service restarts and when its driver is killed."""
    first = servers(env={"AUTOCOMPRESS_FAULT_INJECT": "wait-on-full:3"})
    data = tiny(**{"strategy": {"name": "random", "seed": 0}, "budget.max_full_evaluations": 8,
                   "data.validation.limit": 300})
    search_id = first.post("/v1/searches", json=data).json()["id"]
    wait_for((first.runs / search_id / "fault-waiting").exists)
    assert first.get(f"/v1/searches/{search_id}").json()["progress"]["full_evaluations"] == 2
    live = first.get(f"/v1/searches/{search_id}/pareto")  # built from the store: live in the first session
    assert live.status_code == 200, live.text
    live = live.json()
    assert live["state"] == "running" and live["statistics"]["full_evaluations"] == 2, live["statistics"]
    assert len(live["points"]) + len(live["near_misses"]) + len(live["early_stopped"]) >= 1
    assert live["run_dir"] == f"/v1/searches/{search_id}"
    first.stop()  # the service goes away; the job goes on

    second = servers()
    listed = {s["id"]: s for s in second.get("/v1/searches").json()["searches"]}
    assert listed[search_id]["state"] == "running"
    os.kill(_driver_pid(second, search_id), signal.SIGKILL)  # and now the job dies too
    status = second.wait(search_id, ("interrupted",), timeout=HANG_GUARD)
    done_before = status["progress"]["full_evaluations"]
    assert done_before == 2

    resumed = second.post(f"/v1/searches/{search_id}/resume")
    assert resumed.status_code == 200 and resumed.json()["state"] in ("queued", "running")
    assert second.post(f"/v1/searches/{search_id}/resume").status_code == 409  # already queued or running
    final = second.wait(search_id, ("done", "failed"), timeout=HANG_GUARD)
    assert final["state"] == "done", final
    document = second.get(f"/v1/searches/{search_id}/pareto").json()
    stats = document["statistics"]
    assert stats["sessions"] == 2 and stats["full_evaluations"] > done_before
    assert stats["stopped_by"] in ("full-evaluation budget", "strategy finished")  # it ran to its end
    with RunStore.open_reader(second.runs / search_id) as store:
        fulls = [r.result.candidate_id for r in store.records(("full",))]
    assert len(fulls) == len(set(fulls)) == stats["full_evaluations"]


def test_job_crash_is_reported_failed_with_a_summary_and_the_log_stays_on_the_server(servers, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "broken.pt").write_bytes(b"not a checkpoint")
    server = servers("--data-roots", str(root))
    search_id = server.post("/v1/searches", json=tiny(**{"model.checkpoint": "broken.pt"})).json()["id"]
    status = server.wait(search_id, ("failed", "done"))
    assert status["state"] == "failed" and status["job"]["exit_code"] == 2
    assert status["error"].startswith("the checkpoint could not be loaded") and "log_tail" not in status
    assert "broken.pt: not a file torch.save writes" in (server.runs / search_id / "job.log").read_text()


def test_every_stop_reason_is_shown_as_itself_and_an_error_without_its_message():
    from autocompress.searching import StopReason

    for reason in StopReason:
        assert StopReason.parse(reason.value) is reason and StopReason.public(reason.value) == reason.value
    assert StopReason.public("error: FileNotFoundError: /secret/path") == "error"  # never the message
    assert StopReason.parse("a reason from a newer version") is StopReason.ERROR
    assert StopReason.public("") is None and StopReason.parse(None) is None


def test_a_run_stopped_by_its_probe_budget_is_shown_so_by_the_cli_and_the_service(tmp_path, capsys):
    """budget.max_probes ends the search with `probe budget`: a budget, not an error (the
    service used to report any reason outside its own list as an error)."""
    from autocompress.cli import main
    from autocompress.service.jobs import REQUEST, JobManager

    jobs = JobManager(tmp_path / "runs")
    run = jobs.runs_dir / "probes"
    spec = write_spec(tmp_path, tiny(**{"budget.max_probes": 3, "budget.max_full_evaluations": 50,
                                        "space.granularity": "block"}))
    assert main(["search", str(spec), "--run-dir", str(run)]) == 0
    document = json.loads((run / "pareto.json").read_text())
    assert document["statistics"]["stopped_by"] == "probe budget"
    assert document["statistics"]["proxy_evaluations"] == 3 and document["statistics"]["full_evaluations"] < 50
    assert "stopped by probe budget" in capsys.readouterr().out
    (run / REQUEST).write_text(json.dumps({"name": "probes", "strategy": {"name": "greedy"}}))
    served = jobs.status("probes")
    assert served["state"] == "done" and served["progress"]["stopped_by"] == "probe budget"


@pytest.mark.slow
def test_serve_refuses_an_open_host_without_a_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "AUTOCOMPRESS_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "autocompress", "serve", "--host", "0.0.0.0", "--runs-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=HANG_GUARD)
    assert done.returncode == 2 and "give --token" in done.stderr
