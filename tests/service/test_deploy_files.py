"""docker-compose.yml, the Dockerfile, the KubeRay manifests and the topology script, checked
structurally (there is no Docker engine or Kubernetes here; test_topology runs the same topology)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def command(service: dict[str, Any]) -> str:
    cmd = service["command"]
    return " ".join(cmd) if isinstance(cmd, list) else str(cmd)


def test_compose_has_the_four_services_from_one_image_with_health_checks() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "mlflow", "ray-head", "ray-worker"}
    ours = [services[name] for name in ("mlflow", "ray-head", "ray-worker")]
    assert {s["build"]["dockerfile"] for s in ours} == {"infra/Dockerfile"}
    assert len({s["image"] for s in ours}) == 1
    assert (ROOT / "infra" / "Dockerfile").exists()
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    assert "FROM python:3.11" in (ROOT / "infra" / "Dockerfile").read_text()


def test_compose_wiring() -> None:
    doc = compose()
    services = doc["services"]
    mlflow = command(services["mlflow"])
    assert "--backend-store-uri=postgresql+psycopg://" in mlflow and "@postgres:5432/mlflow" in mlflow
    assert "--serve-artifacts" in mlflow and "--artifacts-destination=/mlartifacts" in mlflow
    assert "mlartifacts:/mlartifacts" in services["mlflow"]["volumes"]
    head = command(services["ray-head"])
    assert "ray start --head" in head and "--dashboard-host=0.0.0.0" in head
    assert "prunehive server" in head and "--ray-address http://127.0.0.1:8265" in head
    assert {"8000:8000", "8265:8265"} <= set(services["ray-head"]["ports"])
    worker = services["ray-worker"]
    assert "--address=ray-head:6379" in command(worker)
    assert "container_name" not in worker and "ports" not in worker  # so that --scale works
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        database = env["PRUNEHIVE_DATABASE_URL"]
        assert database.startswith("postgresql+psycopg://") and "@postgres:5432/" in database
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services and cond["condition"] == "service_healthy", name
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert named <= set(doc["volumes"])
    for v in (v for s in services.values() for v in s.get("volumes", []) if v.startswith("./")):
        assert (ROOT / v.split(":")[0]).exists(), v


def test_kuberay_manifests() -> None:
    cluster = yaml.safe_load((ROOT / "infra" / "kuberay" / "raycluster.yaml").read_text())
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["spec"]["rayVersion"] == ray.__version__
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert ports == {"gcs": 6379, "dashboard": 8265}
    workers = cluster["spec"]["workerGroupSpecs"]
    assert workers and workers[0]["minReplicas"] <= workers[0]["replicas"] <= workers[0]["maxReplicas"]
    docs = list(yaml.safe_load_all((ROOT / "infra" / "kuberay" / "service.yaml").read_text()))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    expected = {("Deployment", "prunehive-server"), ("Service", "prunehive-server"), ("Service", "prunehive-mlflow")}
    assert expected <= kinds
    server = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "prunehive-server")
    args = " ".join(server["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--ray-address http://prunehive-head-svc:8265" in args  # KubeRay's head service for RayCluster "prunehive"
    assert "--data-root /data" in args and ("PersistentVolumeClaim", "prunehive-data") in kinds
    pods = [server["spec"]["template"]["spec"], head["template"]["spec"], *(w["template"]["spec"] for w in workers)]
    for pod in pods:  # the server and every Ray node read the same files at the same path, read-only
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        }
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        data = mounts[next(name for name, claim in claims.items() if claim == "prunehive-data")]
        assert data["mountPath"] == "/data" and data["readOnly"] is True
    secret = yaml.safe_load((ROOT / "infra" / "kuberay" / "secrets.example.yaml").read_text())
    assert {"PRUNEHIVE_DATABASE_URL", "MLFLOW_TRACKING_URI"} <= set(secret["stringData"])


def test_topology_script_parses() -> None:
    subprocess.run(["bash", "-n", str(ROOT / "infra" / "start-topology.sh")], check=True)
