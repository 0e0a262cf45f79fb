"""The HTTP API (FastAPI): submit constraint specs, follow searches, fetch Pareto sets,
reports and compressed models. Every endpoint but ``/healthz`` needs the bearer token;
``/openapi.json`` is one of them."""

from __future__ import annotations

import json
import re
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from autocompress import __version__
from autocompress.errors import AutocompressError, SpecError
from autocompress.service.jobs import Conflict, JobManager, LocalLauncher, RayJobsLauncher
from autocompress.service.submission import Limits, UnsupportedMediaType, check_submission, parse_body

POINT_ID = re.compile(r"^[0-9a-f]{6,64}$")


@dataclass
class ServiceConfig:
    runs_dir: Path
    token: str
    data_roots: list[Path] = field(default_factory=list)
    ray_address: str | None = None
    max_concurrent: int = 1
    max_workers: int = 1
    max_body_bytes: int = 256 * 1024
    allow_factories: list[str] = field(default_factory=list)


def _spec_errors(error: SpecError) -> JSONResponse:
    return JSONResponse(status_code=422, content={
        "message": str(error).splitlines()[0],
        "detail": [{"loc": loc, "msg": message} for loc, message in error.issues],
    })


def create_app(config: ServiceConfig, jobs: JobManager | None = None) -> FastAPI:
    launcher = RayJobsLauncher(config.ray_address) if config.ray_address else LocalLauncher()
    jobs = jobs or JobManager(config.runs_dir, max_concurrent=config.max_concurrent, launcher=launcher)
    limits = Limits(data_roots=config.data_roots, max_workers=config.max_workers,
                    allow_factories=config.allow_factories)
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), config.token.encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token",
                                headers={"WWW-Authenticate": "Bearer"})

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        jobs.start()
        yield
        jobs.shutdown()

    app = FastAPI(title="autocompress", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="Constraint-driven compression search for Spiking Vision Transformers")
    app.state.jobs = jobs
    guard = [Depends(authorized)]

    def known(search_id: str) -> Path:
        if not jobs.exists(search_id):
            raise HTTPException(status_code=404, detail=f"no search {search_id!r}")
        return jobs.runs_dir / search_id

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "version": __version__}

    @app.get("/openapi.json", dependencies=guard, include_in_schema=False)
    def openapi() -> dict:
        return app.openapi()

    @app.post("/v1/searches", status_code=201, dependencies=guard)
    async def submit(request: Request, response: Response):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise HTTPException(status_code=413, detail=f"the spec is larger than {config.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > config.max_body_bytes:
                raise HTTPException(status_code=413, detail=f"the spec is larger than {config.max_body_bytes} bytes")
        try:
            data = parse_body(bytes(body), request.headers.get("content-type", ""))
            spec = check_submission(data, limits)
        except UnsupportedMediaType as error:
            raise HTTPException(status_code=415, detail=str(error)) from None
        except SpecError as error:
            return _spec_errors(error)
        search_id = jobs.submit(spec.model_dump(mode="json"), spec.name)
        response.headers["Location"] = f"/v1/searches/{search_id}"
        return {"id": search_id, "url": f"/v1/searches/{search_id}", "state": jobs.status(search_id)["state"]}

    @app.get("/v1/searches", dependencies=guard)
    def list_searches() -> dict:
        return {"searches": [jobs.status(i) for i in jobs.ids()]}

    @app.get("/v1/searches/{search_id}", dependencies=guard)
    def get_search(search_id: str) -> dict:
        known(search_id)
        return jobs.status(search_id)

    @app.get("/v1/searches/{search_id}/pareto", dependencies=guard)
    def get_pareto(search_id: str):
        path = known(search_id) / "pareto.json"
        if not path.is_file():
            raise HTTPException(status_code=409, detail=f"search {search_id} has no Pareto set yet "
                                                        f"(state: {jobs.status(search_id)['state']})")
        return JSONResponse(json.loads(path.read_text()))

    @app.get("/v1/searches/{search_id}/report", dependencies=guard)
    def get_report(search_id: str):
        path = known(search_id) / "report.html"
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"search {search_id} has no report")
        return FileResponse(path, media_type="text/html")

    @app.get("/v1/searches/{search_id}/points/{point_id}/model", dependencies=guard)
    def get_model(search_id: str, point_id: str):
        run_dir = known(search_id)
        if not POINT_ID.match(point_id):
            raise HTTPException(status_code=404, detail=f"no point {point_id!r}")
        path = run_dir / "exports" / f"{point_id}.safetensors"
        if not path.is_file():
            from autocompress.engine.exporting import export_point

            path.parent.mkdir(exist_ok=True)
            try:
                export_point(run_dir, point_id, path, say=lambda _m: None)
            except AutocompressError as error:
                raise HTTPException(status_code=404, detail=str(error)) from None
        return FileResponse(path, media_type="application/octet-stream", filename=f"{search_id}-{point_id}.safetensors")

    def act(search_id: str, action) -> dict:
        """Resume or cancel; a search in the wrong state for it is a 409."""
        known(search_id)
        try:
            return action(search_id)
        except Conflict as error:
            raise HTTPException(status_code=409, detail=str(error)) from None

    @app.post("/v1/searches/{search_id}/resume", dependencies=guard)
    def resume(search_id: str) -> dict:
        return act(search_id, jobs.resume)

    @app.delete("/v1/searches/{search_id}", dependencies=guard)
    def cancel(search_id: str) -> dict:
        return act(search_id, jobs.cancel)

    return app
