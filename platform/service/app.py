"""The FastAPI app over the job store: submit, list, show, cancel; OpenAPI docs at /docs.

Specs go through the same ``parse_spec`` as the CLI, so a bad field gets the same one-line
message (as a 422). Nothing from a request reaches ``eval``: YAML is read with a safe loader
that also refuses aliases (no "billion laughs"), and ``module:factory`` tasks are refused
unless the operator allowlisted the module. Jobs read only files under the operator's data
roots (``data_roots``): any other path is a 403 that names the field, checked before the spec
is validated so the answer never tells whether the path exists.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prunehive.platform.service.auth import Caller, authenticate
from prunehive.platform.service.data_roots import DataRoots, PathRefused, load_yaml
from prunehive.platform.service.dispatcher import Dispatcher
from prunehive.platform.service.schemas import Health, JobDetail, JobList, JobOut, Submitted, TrialList, TrialOut
from prunehive.platform.spec.job import JobSpec, SpecError, parse_spec
from prunehive.platform.store.jobs import JobRecord, JobStore

MAX_BODY_BYTES = 1 << 20
_bearer = HTTPBearer(auto_error=False)


@dataclass
class ServiceConfig:
    """What the operator decides: which ``module:factory`` tasks may run, which directories jobs may
    read (``data_roots``, resolved; none: no ``hf:`` or ``data:`` paths), how big a request may be."""

    allowed_task_modules: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    data_roots: tuple[Path, ...] = ()

    def task_allowed(self, task: object) -> bool:
        if not isinstance(task, str):
            return True  # an hf: mapping names a model directory: weights and data, never code
        if ":" not in task:
            return True  # a built-in task name
        module = task.partition(":")[0]
        return any(module == m or module.startswith(m + ".") for m in self.allowed_task_modules)


def _spec_body_schema() -> dict[str, Any]:
    schema = JobSpec.model_json_schema()
    return {
        "required": True,
        "content": {
            "application/json": {"schema": schema},
            "application/yaml": {"schema": schema},
        },
    }


def _caller(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    found = authenticate(request.app.state.store, creds.credentials) if creds is not None else None
    if found is None:
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    return found


Auth = Annotated[Caller, Depends(_caller)]


def create_app(store: JobStore, dispatcher: Dispatcher | None = None, config: ServiceConfig | None = None) -> FastAPI:
    cfg = config or ServiceConfig()
    roots = DataRoots(tuple(Path(r).resolve() for r in cfg.data_roots))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if dispatcher is not None:
            dispatcher.start()
        try:
            yield
        finally:
            if dispatcher is not None:
                dispatcher.stop()

    app = FastAPI(title="prunehive", description="Submit and watch pruning-search jobs.", lifespan=lifespan)
    app.state.store = store

    def owned_job(job_id: str, who: Caller) -> JobRecord:
        try:
            job = store.get_job(job_id, owner=None if who.is_admin else who.name)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        if not who.may_see(job.owner):
            raise HTTPException(403, f"job {job.id} belongs to another user")
        return job

    @app.get("/healthz", response_model=Health)
    def healthz() -> Health:
        store.count_trials("")  # one query: the database answers
        return Health(
            status="ok",
            database=store.engine.dialect.name,
            backend=dispatcher.backend.name if dispatcher else None,
            dispatcher=dispatcher.counts() if dispatcher else None,
        )

    @app.post("/jobs", status_code=201, response_model=Submitted, openapi_extra={"requestBody": _spec_body_schema()})
    async def submit(request: Request, who: Auth) -> Submitted:
        data = _parse_body(await _read_limited(request, cfg.max_body_bytes), request.headers.get("content-type", ""))
        try:
            spec = parse_spec(roots.check_spec(data))  # paths first: validation looks at the files
        except PathRefused as exc:
            raise HTTPException(403, str(exc)) from None
        except (SpecError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from None
        if not cfg.task_allowed(spec.task):
            raise HTTPException(422, f"task: module of {spec.task!r} is not on this server's allowlist")
        if spec.tracking.mlflow_uri is not None:
            raise HTTPException(422, "tracking.mlflow_uri: set by the server; leave it out")
        if spec.pruning.from_job is not None:  # a spec reads only the searches its user may see
            try:
                owned_job(spec.pruning.from_job, who)
            except HTTPException as exc:
                raise HTTPException(exc.status_code, f"pruning.from_job: {exc.detail}") from None
        job_id = store.create_job(spec.kind, spec.display_name, spec.model_dump(mode="json"), owner=who.name)
        return Submitted(job_id=job_id, status="queued")

    @app.get("/jobs", response_model=JobList)
    def list_jobs(
        who: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        status: str | None = None,
    ) -> JobList:
        try:
            rows = store.list_jobs(limit=limit, owner=None if who.is_admin else who.name, status=status)
        except ValueError as exc:
            raise HTTPException(422, f"status: {exc}") from None
        return JobList(jobs=[JobOut.of(j, store.count_trials(j.id)) for j in rows])

    @app.get("/jobs/{job_id}", response_model=JobDetail)
    def show(job_id: str, who: Auth) -> JobDetail:
        job = owned_job(job_id, who)
        base = JobOut.of(job, store.count_trials(job.id)).model_dump()
        budget = job.spec.get("search", {}).get("budget")
        return JobDetail(**base, spec=job.spec, summary=job.summary, budget=budget)

    @app.get("/jobs/{job_id}/trials", response_model=TrialList)
    def trials(job_id: str, who: Auth) -> TrialList:
        job = owned_job(job_id, who)
        return TrialList(job_id=job.id, trials=[TrialOut.of(t) for t in store.trials(job.id)])

    @app.post("/jobs/{job_id}/cancel", response_model=Submitted)
    def cancel(job_id: str, who: Auth) -> Submitted:
        job = owned_job(job_id, who)
        try:
            status = store.request_cancel(job.id)
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return Submitted(job_id=job.id, status=status)

    @app.get("/jobs/{job_id}/logs", response_class=PlainTextResponse)
    def logs(job_id: str, who: Auth) -> str:
        job = owned_job(job_id, who)
        if dispatcher is None:
            return ""
        return dispatcher.backend.logs(job)

    return app


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it passes ``limit`` (Content-Length is checked before reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
    return bytes(body)


def _parse_body(body: bytes, content_type: str) -> Any:
    if not body.strip():
        raise HTTPException(422, "spec: empty request body; send the job spec as YAML or JSON")
    try:
        text = body.decode("utf-8")
        if "json" in content_type:
            return json.loads(text)
        return load_yaml(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HTTPException(422, f"spec: not valid YAML or JSON ({first})") from None
