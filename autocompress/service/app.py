"""The HTTP API (FastAPI): submit constraint specs, follow searches, fetch Pareto sets,
reports and compressed models. Every endpoint but ``/healthz`` needs the bearer token;
``/openapi.json`` is one of them. The dashboard (``/``, its files under ``/dashboard/``) is
static: a page that asks for the token and then uses these same endpoints, nothing more.
Every response carries a Content-Security-Policy that allows scripts and styles from this
server's own files only (and the report's one inline style sheet, by its hash).

A spec is parsed and checked in a worker thread with a time limit, never on the event
loop, so a hostile body cannot stall the server. What goes back to a client never
carries the server's own paths or text from the files a job read: failures come back
as a fixed summary (the job's log stays in its run directory), run directories as
their URL.
"""

from __future__ import annotations

import html
import importlib
import json
import logging
import os
import re
import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from autocompress.version import __version__
from autocompress.engine import RunStore, is_run_dir, pareto_document
from autocompress.errors import AutocompressError, SpecError
from autocompress.limits import Limits, finetune_sizes
from autocompress.report.style import report_style_source
from autocompress.searching import StopReason
from autocompress.service.jobs import (
    ERROR_SUMMARIES,
    UNEXPECTED,
    Conflict,
    JobManager,
    LocalLauncher,
    RayJobsLauncher,
)
from autocompress.service.submission import Policy, UnsupportedMediaType, check_submission, parse_body

log = logging.getLogger("autocompress.service")

POINT_ID = re.compile(r"[0-9a-f]{6,64}")
DASHBOARD = Path(__file__).resolve().parent / "dashboard"
# Scripts, styles and fetches from this server only; no inline script anywhere (the dashboard has
# none, a report has none); frames: only the dashboard's sandboxed srcdoc frame of a report,
# whose one inline style sheet is allowed by its hash; nothing may frame these pages.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; "
    f"style-src 'self' {report_style_source()}; img-src 'self' data:; connect-src 'self'; "
    "frame-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
CONCURRENT_CHECKS = 2  # specs parsed and checked at once; more wait their turn without holding the GIL


class FinetuneRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]] = Field(default_factory=list, max_length=64)
    settings: dict[str, Any] = Field(default_factory=dict, max_length=32)

    @field_validator("settings")
    @classmethod
    def _no_paths(cls, value: dict[str, Any]) -> dict[str, Any]:
        refused = sorted(set(value) & {"auto", "points"})
        data = value.get("data", {})
        if not isinstance(data, dict) or set(data) - {"augment", "images_per_epoch"}:
            refused.append("data (but data.augment and data.images_per_epoch)")
        if refused:
            raise ValueError(f"settings may not set {', '.join(refused)}: the training data is the submitted spec's, "
                             "and the points are given as 'points'")
        return value


@dataclass
class ServiceConfig:
    runs_dir: Path
    token: str
    data_roots: list[Path] = field(default_factory=list)
    ray_address: str | None = None
    max_concurrent: int = 1
    max_body_bytes: int = 256 * 1024
    allow_factories: list[str] = field(default_factory=list)  # exact "module:function" pairs
    limits: Limits = field(default_factory=Limits)
    check_seconds: float = 10.0  # the longest a spec may take to parse and check


def _spec_errors(error: SpecError) -> JSONResponse:
    return JSONResponse(status_code=422, content={
        "message": str(error).splitlines()[0],
        "detail": [{"loc": loc, "msg": message} for loc, message in error.issues],
    })


def create_app(config: ServiceConfig, jobs: JobManager | None = None) -> FastAPI:
    roots = [Path(os.path.realpath(root)) for root in config.data_roots]
    policy = Policy(data_roots=roots, limits=config.limits, allow_factories=list(config.allow_factories))
    launcher = RayJobsLauncher(config.ray_address) if config.ray_address else LocalLauncher()
    jobs = jobs or JobManager(config.runs_dir, max_concurrent=config.max_concurrent, launcher=launcher,
                              job_options=[arg for root in roots for arg in ("--data-roots", str(root))],
                              search_options=config.limits.as_options())
    bearer = HTTPBearer(auto_error=False)
    token = config.token.encode()

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), token):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        def prepare() -> None:
            # first the settled searches' status, so that the first listing after a start answers from memory;
            # then torch (parameter counts need it), beside the loop, rather than in the first submission
            jobs.warm()
            importlib.import_module("autocompress.models")

        app.state.checks = anyio.CapacityLimiter(CONCURRENT_CHECKS)
        jobs.start()
        threading.Thread(target=prepare, daemon=True).start()
        yield
        jobs.shutdown()

    app = FastAPI(title="autocompress", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="Constraint-driven compression search for Spiking Vision Transformers")
    app.state.jobs = jobs
    guard = [Depends(authorized)]

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        """The dashboard's page: static, no data in it (it asks for the token, then calls the API)."""
        return FileResponse(DASHBOARD / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard")

    def known(search_id: str) -> Path:
        if not jobs.exists(search_id):
            raise HTTPException(status_code=404, detail="no such search")
        return jobs.runs_dir / search_id

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "version": __version__}

    @app.get("/openapi.json", dependencies=guard, include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    @app.get("/v1/policy", dependencies=guard)
    def get_policy() -> dict:
        """What this service accepts: its caps, its data roots and allowed factories."""
        return {"limits": config.limits.values, "data_roots": [str(root) for root in roots],
                "allow_factories": policy.allow_factories, "max_body_bytes": config.max_body_bytes,
                "max_concurrent": config.max_concurrent}

    @app.post("/v1/searches", status_code=201, dependencies=guard)
    async def submit(request: Request, response: Response):
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > config.max_body_bytes:
            raise HTTPException(status_code=413, detail=f"the spec is larger than {config.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > config.max_body_bytes:
                raise HTTPException(status_code=413, detail=f"the spec is larger than {config.max_body_bytes} bytes")
        content_type = request.headers.get("content-type", "")

        def check():
            return check_submission(parse_body(bytes(body), content_type), policy)

        try:
            with anyio.fail_after(config.check_seconds):
                spec = await anyio.to_thread.run_sync(check, abandon_on_cancel=True, limiter=request.app.state.checks)
        except TimeoutError:
            raise HTTPException(status_code=422, detail=f"the spec took more than {config.check_seconds:g} s to "
                                                        "check; send a smaller one") from None
        except UnsupportedMediaType as error:
            raise HTTPException(status_code=415, detail=str(error)) from None
        except SpecError as error:
            return _spec_errors(error)
        search_id = await anyio.to_thread.run_sync(jobs.submit, spec.model_dump(mode="json"), spec.name)
        response.headers["Location"] = f"/v1/searches/{search_id}"
        return {"id": search_id, "url": f"/v1/searches/{search_id}", "state": jobs.status(search_id)["state"]}

    @app.get("/v1/searches", dependencies=guard)
    def list_searches(limit: int = Query(50, ge=1, le=200), after: str | None = Query(None, max_length=200)) -> dict:
        """Newest first, ``limit`` a page; ``next`` is the ``after`` of the next page."""
        page, following = jobs.ids(limit, after)
        return {"searches": [jobs.status(i) for i in page], "next": following}

    @app.get("/v1/searches/{search_id}", dependencies=guard)
    def get_search(search_id: str) -> dict:
        known(search_id)
        return jobs.status(search_id)

    @app.get("/v1/searches/{search_id}/pareto", dependencies=guard)
    def get_pareto(search_id: str):
        """The Pareto document built from the run store, as ``autocompress pareto`` builds it:
        live while the search runs (its first session too), final once it has ended."""
        run_dir = known(search_id)
        try:
            with RunStore.open_reader(run_dir) as store:
                document = pareto_document(store)
        except AutocompressError:  # queued, or its store is not made yet
            raise HTTPException(status_code=409, detail=f"search {search_id} has no results yet "
                                                        f"(state: {jobs.status(search_id)['state']})") from None
        document["run_dir"] = f"/v1/searches/{search_id}"
        statistics = document.get("statistics") or {}
        if statistics.get("stopped_by"):
            statistics["stopped_by"] = StopReason.public(statistics["stopped_by"])  # never an error's message
        return JSONResponse(document)

    @app.get("/v1/searches/{search_id}/report", dependencies=guard)
    def get_report(search_id: str):
        run_dir = known(search_id)
        try:
            page = (run_dir / "report.html").read_text()
        except OSError:
            raise HTTPException(status_code=404, detail=f"search {search_id} has no report yet") from None
        return HTMLResponse(page.replace(html.escape(str(run_dir.resolve())), f"/v1/searches/{search_id}"))

    @app.get("/v1/searches/{search_id}/points/{point_id}/model", dependencies=guard)
    def get_model(search_id: str, point_id: str, tuned: bool = False):
        run_dir = known(search_id)
        if not POINT_ID.fullmatch(point_id) or not is_run_dir(run_dir):
            raise HTTPException(status_code=404, detail="no such point")
        if tuned:
            from autocompress.engine.finetune import TUNED, tune_dir

            with RunStore.open_reader(run_dir) as store:
                entry = (store.meta("finetune") or {}).get(point_id) or {}
            path = tune_dir(run_dir, point_id) / TUNED
            if entry.get("state") != "done" or not path.is_file():
                raise HTTPException(status_code=404, detail="no finished fine-tuning of this point")
            return FileResponse(path, media_type="application/octet-stream",
                                filename=f"{search_id}-{point_id}-tuned.safetensors")
        path = run_dir / "exports" / f"{point_id}.safetensors"
        if not path.is_file():  # exported once, for a fully evaluated point only, then kept
            with RunStore.open_reader(run_dir) as store:
                evaluated = {r.result.candidate_id for r in store.records(("full",))}
            if point_id not in evaluated:
                raise HTTPException(status_code=404, detail="no such point")
            from autocompress.engine import export_point

            path.parent.mkdir(exist_ok=True)
            try:
                export_point(run_dir, point_id, path, say=lambda _m: None, confine=[str(root) for root in roots])
            except AutocompressError as error:
                log.warning("export of %s/%s failed: %s", search_id, point_id, error)
                summary = ERROR_SUMMARIES.get(type(error).__name__, UNEXPECTED)
                raise HTTPException(status_code=409, detail=f"the model cannot be exported now: {summary}") from None
        return FileResponse(path, media_type="application/octet-stream", filename=f"{search_id}-{point_id}.safetensors")

    def act(search_id: str, action) -> dict:
        """Resume or cancel; a search in the wrong state for it is a 409."""
        known(search_id)
        try:
            return action(search_id)
        except Conflict as error:
            raise HTTPException(status_code=409, detail=str(error)) from None

    @app.post("/v1/searches/{search_id}/finetune", dependencies=guard)
    def finetune(search_id: str, request: FinetuneRequest | None = None) -> dict:
        """Queue recovery fine-tuning (``autocompress finetune``) of a search that has
        ended: ``points`` (default: the spec's finetune.points), ``settings`` (finetune
        keys of the spec but ``data``, ``auto`` and ``points``; the training data is the
        submitted spec's)."""
        known(search_id)
        request = request or FinetuneRequest()
        args: list[str] = []
        for point in request.points:
            args += ["--point", point]
        if request.settings:
            from pydantic import ValidationError

            from autocompress.spec import FinetuneSpec

            try:
                checked = FinetuneSpec.model_validate(request.settings)
            except ValidationError as error:
                raise HTTPException(status_code=422, detail=[
                    {"loc": ["settings", *map(str, e["loc"])], "msg": e["msg"]} for e in error.errors()]) from None
            for cap, name, value in finetune_sizes(checked):
                if value > config.limits[cap]:
                    raise HTTPException(status_code=422, detail=f"settings: {name} {value} is above this service's "
                                                                f"limit of {config.limits[cap]:g}")
            values = checked.model_dump(mode="json")
            for key, given in request.settings.items():  # only what was given: a section keeps its other keys
                if isinstance(given, dict):
                    args += [arg for sub in given for arg in
                             ("--set", f"finetune.{key}.{sub}={json.dumps(values[key][sub])}")]
                else:
                    args += ["--set", f"finetune.{key}={json.dumps(values[key])}"]
        return act(search_id, lambda sid: jobs.finetune(sid, tuple(args)))

    @app.post("/v1/searches/{search_id}/resume", dependencies=guard)
    def resume(search_id: str) -> dict:
        return act(search_id, jobs.resume)

    @app.delete("/v1/searches/{search_id}", dependencies=guard)
    def cancel(search_id: str) -> dict:
        return act(search_id, jobs.cancel)

    return app
