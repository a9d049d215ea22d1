"""The service reads only under the operator's data roots: any other path in a spec is a 403 naming the
field, the same whether the path exists or not; without roots no path is taken at all."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from topology import Processes, bin_path, free_port, http_ok, wait_for

from prunehive.platform.service.app import ServiceConfig, create_app
from prunehive.platform.service.auth import add_user
from prunehive.platform.service.data_roots import roots_from
from prunehive.platform.store.jobs import JobStore

OUTSIDE = "path is outside the server's data roots"
HOW_TO = "start the server with --data-root DIR or set PRUNEHIVE_DATA_ROOTS"


def hf_dir(path: Path) -> Path:
    """A directory that passes the spec's checks (a config naming a causal LM, a weights file)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    header = b'{"__metadata__": {"format": "pt"}}'
    (path / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)  # no tensors, a valid file
    return path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    base = tmp_path / "root"
    hf_dir(base / "models" / "tiny")
    (base / "data").mkdir()
    for split in ("train", "valid", "test"):
        (base / "data" / f"{split}.txt").write_text("def f():\n    return 1\n")
    return base


@pytest.fixture()
def store(tmp_path: Path) -> JobStore:
    return JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")


def client(store: JobStore, *roots: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(store, None, ServiceConfig(data_roots=roots_from(map(str, roots))))) as api:
        yield api, {"Authorization": f"Bearer {add_user(store, 'alice')}", "Content-Type": "application/json"}


@pytest.fixture()
def api(store: JobStore, root: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    yield from client(store, root)


def spec(hf: Any, calibration: Any = None, **extra: Any) -> str:
    data = {"calibration": calibration or "data/train.txt", "validation": "data/valid.txt", "test": "data/test.txt"}
    return json.dumps({"kind": "search", "task": {"hf": hf, "data": data}, **extra})


def post(api: tuple[TestClient, dict[str, str]], body: str) -> tuple[int, str]:
    reply = api[0].post("/jobs", content=body, headers=api[1])
    return reply.status_code, reply.json().get("detail") or reply.json().get("job_id")


def test_etc_passwd_as_data_is_refused_and_no_job_is_made(api: Any, root: Path, store: JobStore) -> None:
    assert post(api, spec(str(root / "models/tiny"), "/etc/passwd")) == (403, f"task.data.calibration: {OUTSIDE}")
    assert store.list_jobs() == []


def test_outside_paths_get_one_answer_whether_they_exist_or_not(api: Any, tmp_path: Path) -> None:
    hf_dir(tmp_path / "elsewhere")
    answers = {post(api, spec(p)) for p in ("/etc", "/etc/no-such-dir-here", str(tmp_path / "elsewhere"))}
    assert answers == {(403, f"task.hf: {OUTSIDE}")}


def test_escapes_by_dots_symlinks_task_files_and_json_text_are_refused(api: Any, root: Path, tmp_path: Path) -> None:
    (root / "link").symlink_to(hf_dir(tmp_path / "secret-model"))  # a link inside the root, pointing out
    (root / "data" / "passwd").symlink_to("/etc/passwd")
    assert post(api, spec("models/../../secret-model")) == (403, f"task.hf: {OUTSIDE}")
    assert post(api, spec("link")) == (403, f"task.hf: {OUTSIDE}")
    assert post(api, spec("models/tiny", "data/passwd")) == (403, f"task.data.calibration: {OUTSIDE}")
    (tmp_path / "task.yaml").write_text(f"hf: {root / 'models/tiny'}\ndata: {{calibration: /etc/passwd}}\n")
    assert post(api, json.dumps({"task": str(tmp_path / "task.yaml")})) == (403, f"task: {OUTSIDE}")
    (root / "task.yaml").write_text("hf: models/tiny\ndata: {calibration: /etc/passwd, validation: a, test: b}\n")
    assert post(api, json.dumps({"task": "task.yaml"})) == (403, f"task.data.calibration: {OUTSIDE}")
    as_text = json.dumps({"hf": "/etc", "data": {"calibration": "a", "validation": "b", "test": "c"}})
    assert post(api, json.dumps({"task": as_text})) == (403, f"task.hf: {OUTSIDE}")
    lm_eval = {"evaluation": {"lm_eval": {"tasks": ["x"], "include_path": "/etc"}}}
    assert post(api, spec("models/tiny", **lm_eval)) == (403, f"evaluation.lm_eval.include_path: {OUTSIDE}")


def test_paths_inside_the_root_are_accepted_resolved(api: Any, root: Path, store: JobStore) -> None:
    status, job_id = post(api, spec(str(root / "models" / "tiny")))  # absolute
    assert status == 201
    task = store.get_job(job_id).spec["task"]
    assert task["hf"] == str((root / "models/tiny").resolve())
    assert task["data"]["calibration"] == str((root / "data/train.txt").resolve())
    status, job_id = post(api, spec("models/tiny"))  # relative: under the first root
    assert status == 201 and store.get_job(job_id).spec["task"]["hf"] == str((root / "models/tiny").resolve())
    (root / "task.yaml").write_text("task: {hf: models/tiny, data: {calibration: ../root/data/train.txt, "
                                    "validation: data/valid.txt, test: data/test.txt}}\n")  # fmt: skip
    status, job_id = post(api, json.dumps({"task": "task.yaml"}))  # a task file: read here, put inline
    assert status == 201 and store.get_job(job_id).spec["task"]["data"]["calibration"] == task["data"]["calibration"]
    # Inside the roots the spec's own checks speak, and may say that a path does not exist.
    status, detail = post(api, spec("models/missing"))
    assert status == 422 and "does not exist" in detail


def test_a_server_without_roots_takes_no_paths_and_says_how(store: JobStore, root: Path) -> None:
    for api in client(store):
        assert post(api, spec(str(root / "models/tiny"))) == (
            403,
            f"task.hf: this server reads no model or data paths; {HOW_TO}",
        )
        assert post(api, json.dumps({"task": "digits-mlp", "search": {"budget": 2}}))[0] == 201  # built-ins need none


def test_roots_come_from_flags_and_the_environment(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert roots_from([str(a)], f"{b}{os.pathsep}{a}") == (a.resolve(), b.resolve())
    with pytest.raises(ValueError, match="--data-root: '.*missing' is not a directory"):
        roots_from([str(tmp_path / "missing")])


def test_submit_prints_the_refusal_in_one_line_and_exits_2(tmp_path: Path, root: Path) -> None:
    """A real ``prunehive server`` (roots from PRUNEHIVE_DATA_ROOTS) and ``prunehive submit``."""
    env = {**os.environ, "PRUNEHIVE_HOME": str(tmp_path / "home"), "PRUNEHIVE_DATA_ROOTS": str(root)}
    env |= {"PRUNEHIVE_DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}"}
    wrong = [bin_path("prunehive"), "server", "--no-dispatch", "--data-root", str(tmp_path / "missing")]
    done = subprocess.run(wrong, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().endswith(f"'{tmp_path / 'missing'}' is not a directory")
    add = [bin_path("prunehive"), "users", "add", "alice", "--json"]
    token = json.loads(subprocess.run(add, env=env, check=True, capture_output=True, text=True).stdout)["token"]
    procs, port = Processes(tmp_path, env), free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        procs.start("server", [bin_path("prunehive"), "server", "--no-dispatch", "--port", str(port)])
        wait_for(lambda: http_ok(f"{url}/healthz"), "prunehive server", 120)
        assert f"data roots {root.resolve()}" in " ".join(procs.log("server").split())  # the console may wrap it

        def submit(body: str) -> subprocess.CompletedProcess[str]:
            (tmp_path / "spec.json").write_text(body)
            cmd = [bin_path("prunehive"), "submit", str(tmp_path / "spec.json"), "--server", url, "--token", token]
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)

        refused = submit(spec("models/tiny", "/etc/passwd"))
        assert refused.returncode == 2 and refused.stdout == ""
        assert refused.stderr.strip() == f"error: server answered 403: task.data.calibration: {OUTSIDE}"
        accepted = submit(spec("models/tiny"))
        assert accepted.returncode == 0 and "queued" in accepted.stdout, accepted.stderr
    finally:
        procs.stop_all()
