"""The API: auth (401/403), spec errors (422 naming the field), the task allowlist, the body limit, logs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from prunehive.platform.service.app import ServiceConfig, create_app
from prunehive.platform.service.auth import add_user
from prunehive.platform.store.jobs import JobStore

SPEC = "kind: search\ntask: digits-mlp\nsearch: {strategy: random, budget: 3}\nresources: {workers: 1}\n"


@pytest.fixture()
def store(tmp_path: Path) -> JobStore:
    return JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


@pytest.fixture()
def api(store: JobStore) -> Iterator[TestClient]:
    config = ServiceConfig(allowed_task_modules=("teamtasks",), max_body_bytes=4096)
    with TestClient(create_app(store, None, config)) as client:
        yield client


@pytest.fixture()
def tokens(store: JobStore) -> dict[str, str]:
    return {"alice": add_user(store, "alice"), "bob": add_user(store, "bob"), "root": add_user(store, "root", True)}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def submit(api: TestClient, token: str, body: str = SPEC, content_type: str = "application/yaml") -> str:
    reply = api.post("/jobs", content=body, headers={**auth(token), "Content-Type": content_type})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["job_id"])


def test_health_and_docs_need_no_token(api: TestClient) -> None:
    assert api.get("/healthz").json()["status"] == "ok"
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/trials", "/jobs/{job_id}/cancel"} <= set(paths)


def test_requests_without_a_valid_token_get_401(api: TestClient, tokens: dict[str, str]) -> None:
    assert api.get("/jobs").status_code == 401
    assert api.post("/jobs", content=SPEC).status_code == 401
    reply = api.get("/jobs", headers=auth(tokens["alice"] + "x"))
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert api.get("/jobs", headers={"Authorization": f"Basic {tokens['alice']}"}).status_code == 401


def test_users_see_and_cancel_only_their_own_jobs(api: TestClient, tokens: dict[str, str], store: JobStore) -> None:
    mine = submit(api, tokens["alice"])
    theirs = submit(api, tokens["bob"], json.dumps({"kind": "search", "search": {"budget": 2}}), "application/json")
    assert store.get_job(mine).owner == "alice"
    listed = api.get("/jobs", headers=auth(tokens["alice"])).json()["jobs"]
    assert [j["job_id"] for j in listed] == [mine]
    for method, path in [("GET", ""), ("GET", "/trials"), ("POST", "/cancel"), ("GET", "/logs")]:
        reply = api.request(method, f"/jobs/{theirs}{path}", headers=auth(tokens["alice"]))
        assert reply.status_code == 403, (path, reply.text)
    assert store.get_job(theirs).status == "queued"
    assert api.get(f"/jobs/{'f' * 32}", headers=auth(tokens["alice"])).status_code == 404
    everything = api.get("/jobs", headers=auth(tokens["root"])).json()["jobs"]
    assert {j["job_id"] for j in everything} == {mine, theirs}
    detail = api.get(f"/jobs/{mine[:8]}", headers=auth(tokens["alice"])).json()  # a prefix is enough
    assert detail["job_id"] == mine and detail["budget"] == 3 and detail["spec"]["search"]["strategy"] == "random"
    hidden = api.get(f"/jobs/{theirs[:4]}", headers=auth(tokens["alice"]))  # a prefix finds only one's own jobs
    assert hidden.status_code == 404 and theirs not in hidden.text
    assert api.get(f"/jobs/{theirs[:4]}", headers=auth(tokens["root"])).json()["job_id"] == theirs
    cancelled = api.post(f"/jobs/{theirs}/cancel", headers=auth(tokens["root"]))
    assert cancelled.json() == {"job_id": theirs, "status": "cancelled"}
    again = api.post(f"/jobs/{theirs}/cancel", headers=auth(tokens["root"]))
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


def test_a_federated_spec_reads_only_a_search_its_user_may_see(api: TestClient, tokens: dict[str, str]) -> None:
    mine, theirs = submit(api, tokens["alice"]), submit(api, tokens["bob"])

    def federated(token: str, job_id: str) -> tuple[int, str]:
        spec = {"kind": "federated", "task": "digits-mlp", "pruning": {"sparsity": 0.5, "from_job": job_id}}
        reply = api.post("/jobs", content=json.dumps(spec), headers={**auth(token), "Content-Type": "application/json"})
        return reply.status_code, reply.text

    assert federated(tokens["alice"], mine)[0] == 201
    status, text = federated(tokens["alice"], theirs)  # as GET /jobs/{id} answers
    assert status == 403 and "pruning.from_job" in text and "another user" in text
    assert federated(tokens["alice"], theirs[:4])[0] == 404  # a prefix finds only one's own jobs
    assert federated(tokens["alice"], "f" * 32)[0] == 404
    assert federated(tokens["root"], theirs)[0] == 201


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("kind: search\nsearch: {strategy: evolve}\n", "search.strategy: 'evolve' is not one of"),
        ("kind: search\nresources: {workers: 0}\n", "resources.workers: Input should be greater than or equal to 1"),
        ("kind: search\nbogus: 1\n", "bogus: unknown field"),
        ("- just\n- a list\n", "spec: expected a mapping"),
        ("kind: [unclosed\n", "spec: not valid YAML or JSON"),
        ("a: &x [1]\nb: *x\n", "aliases are not allowed"),
        ("", "spec: empty request body"),
        ("task: evil.module:factory\n", "task: module of 'evil.module:factory' is not on this server's allowlist"),
        ("task: os:system\n", "task: module of 'os:system' is not on this server's allowlist"),
        ("tracking: {mlflow_uri: 'file:///etc'}\n", "tracking.mlflow_uri: set by the server"),
    ],
)
def test_bad_specs_get_422_naming_the_field(api: TestClient, tokens: dict[str, str], body: str, message: str) -> None:
    reply = api.post("/jobs", content=body, headers=auth(tokens["alice"]))
    assert reply.status_code == 422
    assert message in reply.json()["detail"]


def test_allowlisted_task_modules_are_accepted(api: TestClient, tokens: dict[str, str]) -> None:
    submit(api, tokens["alice"], "task: teamtasks.vision:make_task\n")
    submit(api, tokens["alice"], "task: teamtasks:make_task\n")


def test_request_bodies_over_the_limit_get_413(api: TestClient, tokens: dict[str, str]) -> None:
    big = SPEC + "# " + "x" * 5000 + "\n"
    assert api.post("/jobs", content=big, headers=auth(tokens["alice"])).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield SPEC.encode()
        for _ in range(10):
            yield b"#" + b"x" * 1000 + b"\n"

    assert api.post("/jobs", content=chunks(), headers=auth(tokens["alice"])).status_code == 413


def test_tokens_never_reach_the_logs(
    api: TestClient, tokens: dict[str, str], caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    job = submit(api, tokens["alice"])
    api.get(f"/jobs/{job}", headers=auth(tokens["alice"]))
    api.get("/jobs", headers=auth(tokens["bob"] + "wrong"))
    api.get(f"/jobs/{job}", headers=auth(tokens["bob"]))
    captured = capsys.readouterr()
    text = caplog.text + captured.out + captured.err
    assert caplog.records  # something was logged at all
    for token in tokens.values():
        assert token not in text and token[4:] not in text
