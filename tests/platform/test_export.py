"""``prunehive export``: a finished search's candidate written as a Hugging Face directory, a state dict or
an llm-compressor recipe, and reloaded from those files alone to the quality its trial recorded.

Real jobs on a real local Ray (tiny Llama and ViT built from configs, digits for a metric search), real
``from_pretrained`` reloads, and the channel export of a Llama (its coupled gate and up projections).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hf_models import causal_lm, vit_classifier
from typer.testing import CliRunner

from prunehive.platform.cli import app
from prunehive.workers.engine import PruningEngine
from prunehive.workers.tasks import load_task

runner = CliRunner()
SMALL = {"calibration": 1024, "validation": 512, "test": 512}


@pytest.fixture(scope="module")
def home(module_home: Path) -> Path:
    """One job store and MLflow store for the module: later tests read the jobs that earlier ones ran."""
    return module_home


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("export-models")
    directory, data = causal_lm(root / "llama", "llama")
    llama = {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}
    directory, data = vit_classifier(root / "vit")
    return {"llama": llama, "vit": {"hf": str(directory), "data": data}}


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_job(spec: dict[str, Any], path: Path) -> dict[str, Any]:
    path.write_text(yaml.safe_dump(spec))
    summary = invoke("run", str(path), "--json")
    assert summary["status"] == "succeeded"
    return summary


@pytest.fixture(scope="module")
def jobs(
    tasks: dict[str, dict[str, Any]], home: Path, local_ray: None, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """A small finished search per model: its summary and, by candidate id, its trial rows."""
    out = {}
    for family, task in tasks.items():
        spec = {
            "kind": "search",
            "task": task,
            "pruning": {"sparsity": 0.5, "metric": "wanda"},
            "search": {"strategy": "random", "budget": 4, "baselines": ["uniform"]},
            "resources": {"workers": 1},
        }
        summary = run_job(spec, tmp_path_factory.mktemp(family) / "spec.yaml")
        out[family] = {"summary": summary, "trials": {t.candidate_id: t for t in job_store().trials(summary["job_id"])}}
    return out


def job_store() -> Any:
    from prunehive.platform.settings import default_database_url
    from prunehive.platform.store.jobs import JobStore

    return JobStore(default_database_url())


def trial_of(job: dict[str, Any], candidate: int) -> Any:
    """The candidate's trial row: its requested sparsities (``params``) and recorded ``result``."""
    return job["trials"][candidate]


def requested(trial: Any) -> dict[str, float]:
    return dict(zip(trial.result["layers"], trial.params["sparsity"], strict=True))


def validation(result: dict[str, Any], quality: str) -> float:
    return float(result["metrics"]["validation"][quality])


@pytest.mark.ray
@pytest.mark.parametrize("family", ["llama", "vit"])
def test_hf_export_reloads_to_the_trial_quality(
    family: str, jobs: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoModelForImageClassification

    job = jobs[family]
    out = tmp_path / "exported"
    obj = invoke("export", job["summary"]["job_id"][:8], "--out", str(out), "--json")  # an id prefix will do
    best = job["summary"]["best"]["candidate_id"]
    assert obj["job_id"] == job["summary"]["job_id"] and obj["candidate"] == best and obj["format"] == "hf"
    assert {"config.json", "model.safetensors", "prunehive.json"} <= set(obj["files"])
    info = json.loads((out / "prunehive.json").read_text())
    trial = trial_of(job, best)
    assert info["candidate_id"] == best and info["metric"] == "wanda" and info["granularity"] == "unstructured"
    assert info["sparsity"] == requested(trial)
    assert info["spec"]["task"]["hf"] == tasks[family]["hf"]

    if family == "llama":
        assert "tokenizer.json" in obj["files"]
        model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
        quality = "perplexity"
    else:
        assert "preprocessor_config.json" in obj["files"]
        AutoImageProcessor.from_pretrained(out, local_files_only=True, backend="pil")
        model = AutoModelForImageClassification.from_pretrained(out, local_files_only=True)
        quality = "accuracy"
    modules = dict(model.named_modules())
    for name, achieved in trial.result["layers"].items():  # the weights are zero, not masked on the fly
        assert float((modules[name].weight == 0).float().mean()) == pytest.approx(achieved, abs=1e-6)
    evaluation = load_task(tasks[family]).evaluate(model, "validation")
    assert evaluation.quality == pytest.approx(validation(trial.result, quality), rel=1e-4)
    # Test figures beside validation: the best's, as the job's summary reports them, which the files reproduce.
    recorded = job["summary"]["best"]["metrics"]["test"]
    assert info["test_metrics"] == obj["test_metrics"] == recorded and info["metrics"] == trial.result["metrics"]
    assert load_task(tasks[family]).evaluate(model, "test").quality == pytest.approx(recorded[quality], rel=1e-4)


@pytest.mark.ray
def test_torch_export_of_a_named_candidate(
    jobs: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    job = jobs["llama"]
    best = job["summary"]["best"]["candidate_id"]
    other = min(c for c, t in job["trials"].items() if t.state == "complete" and c != best)
    out = tmp_path / "state"
    obj = invoke(
        "export", job["summary"]["job_id"], "--candidate", str(other), "--format", "torch", "--out", str(out), "--json"
    )
    assert obj["candidate"] == other and obj["files"] == ["model.pt", "prunehive.json"]
    model = AutoModelForCausalLM.from_pretrained(tasks["llama"]["hf"], local_files_only=True)
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    trial = trial_of(job, other)
    info = json.loads((out / "prunehive.json").read_text())
    assert info["candidate_id"] == other and info["sparsity"] == requested(trial)
    evaluation = load_task(tasks["llama"]).evaluate(model, "validation")
    assert evaluation.quality == pytest.approx(validation(trial.result, "perplexity"), rel=1e-4)
    # A candidate the summary does not list is scored on test at export.
    test = load_task(tasks["llama"]).evaluate(model, "test")
    assert info["test_metrics"] == obj["test_metrics"]
    assert info["test_metrics"]["perplexity"] == pytest.approx(test.quality, rel=1e-4)
    assert info["test_metrics"]["loss"] == pytest.approx(test.loss, rel=1e-4)


@pytest.mark.ray
def test_recipe_carries_the_candidates_sparsities(
    jobs: dict[str, dict[str, Any]], tasks: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    job = jobs["llama"]
    out = tmp_path / "recipe"
    obj = invoke("export", job["summary"]["job_id"], "--format", "recipe", "--out", str(out), "--json")
    assert obj["files"] == ["prunehive.json", "recipe.yaml"]
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    modifier = recipe["sparsity_stage"]["sparsity_modifiers"]["WandaPruningModifier"]  # the job's metric
    info = json.loads((out / "prunehive.json").read_text())
    assert modifier["mask_structure"] == "0:0" and len(modifier["targets"]) == 14  # 7 Linear layers a block
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tasks["llama"]["hf"], local_files_only=True)
    in_model_order = [n for n, _ in model.named_modules() if n in modifier["targets"]]
    assert modifier["targets"] == in_model_order == list(info["sparsity"])  # llm-compressor indexes in this order
    measured = trial_of(job, obj["candidate"]).result["layers"]  # the candidate's own numbers, as the job pruned
    assert modifier["sparsity"] == [measured[n] for n in modifier["targets"]]
    requested_ = requested(trial_of(job, obj["candidate"]))
    assert all(abs(s - requested_[n]) < 1e-3 for n, s in zip(modifier["targets"], modifier["sparsity"], strict=True))


@pytest.mark.ray
def test_recipe_records_the_test_figures(jobs: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """No model is rebuilt for a recipe: the best's test figures come from the job's summary."""
    job = jobs["llama"]
    obj = invoke("export", job["summary"]["job_id"], "--format", "recipe", "--out", str(tmp_path / "r"), "--json")
    info = json.loads((tmp_path / "r" / "prunehive.json").read_text())
    assert info["test_metrics"] == obj["test_metrics"] == job["summary"]["best"]["metrics"]["test"]
    assert set(info["test_metrics"]) == {"perplexity", "loss", "objective"}


@pytest.mark.ray
def test_metric_search_best_exports_as_a_state_dict(home: Path, local_ray: None, tmp_path: Path) -> None:
    """A built-in task's default format is torch; a metric search's best carries its expression."""
    spec = {
        "kind": "metric-search",
        "task": "digits-mlp",
        "pruning": {"sparsity": 0.8},
        "search": {"budget": 4, "seed": 0, "options": {"population": 4}, "baselines": ["magnitude"]},
        "resources": {"workers": 1},
    }
    summary = run_job(spec, tmp_path / "spec.yaml")
    out = tmp_path / "best"
    obj = invoke("export", summary["job_id"], "--out", str(out), "--json")
    assert obj["format"] == "torch" and obj["candidate"] == summary["best"]["candidate_id"]
    assert obj["metric"] == f"expr:{summary['best']['expression']}"
    task = load_task("digits-mlp")
    model = task.architecture()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    recorded = summary["best"]["metrics"]["validation"]["accuracy"]
    assert task.evaluate(model, "validation").quality == pytest.approx(recorded, rel=1e-4)
    test = summary["best"]["metrics"]["test"]
    assert obj["test_metrics"] == test
    assert task.evaluate(model, "test").quality == pytest.approx(test["accuracy"], rel=1e-4)


@pytest.mark.ray
def test_export_errors_are_one_line(jobs: dict[str, dict[str, Any]], home: Path, tmp_path: Path) -> None:
    store = job_store()
    queued = store.create_job("search", "q", {"kind": "search", "task": "digits-mlp"})
    builtin = store.create_job("search", "d", {"kind": "search", "task": "digits-mlp"}, status="succeeded")
    job = jobs["llama"]["summary"]["job_id"]
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    cases = [
        (["export", "feedfacecafe", "--out", str(tmp_path / "a")], "no job 'feedfacecafe'"),
        (["export", queued, "--out", str(tmp_path / "a")], "is queued; export it once it has finished"),
        (["export", job, "--candidate", "999", "--out", str(tmp_path / "a")], "has no trial with candidate id 999"),
        (["export", job, "--candidate", "top", "--out", str(tmp_path / "a")], "--candidate: expected best"),
        (["export", job, "--out", str(full)], "is not an empty directory"),
        (["export", job, "--format", "onnx", "--out", str(tmp_path / "a")], "--format: 'onnx' is not one of"),
        (["export", builtin, "--format", "hf", "--out", str(tmp_path / "a")], "--format hf needs an hf: task"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "a").exists()


def test_channel_export_of_a_llama_matches_the_masked_model(tasks: dict[str, dict[str, Any]]) -> None:
    """Gate and up projections pruned to different plans: the smaller model removes the union of their
    channels, from both and from down_proj's inputs, and computes what the masked model computes."""
    task = load_task(tasks["llama"])
    engine = PruningEngine(task, "magnitude", "channel")
    assert all(n.endswith(("gate_proj", "up_proj")) for n in engine.names)
    vector = [0.25, 0.5, 0.4, 0.1][: len(engine.names)]
    small = engine.export(vector)
    masked = copy.deepcopy(engine.model)
    modules = dict(masked.named_modules())
    masks = engine.masks(vector)
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight.mul_(mask)
    x = next(iter(task.batches("validation")))[0]
    with torch.no_grad():
        assert torch.allclose(small(x).logits, masked(x).logits, atol=1e-5)
    shrunk = dict(small.named_modules())
    removed = ~masks["model.layers.0.mlp.gate_proj"][:, 0] | ~masks["model.layers.0.mlp.up_proj"][:, 0]
    kept = 64 - int(removed.sum())
    assert kept < 64 - 32  # more than either plan alone removes
    for name in ("gate_proj", "up_proj"):
        assert shrunk[f"model.layers.0.mlp.{name}"].out_features == kept
    assert shrunk["model.layers.0.mlp.down_proj"].in_features == kept
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in engine.model.parameters())
    assert task.evaluate(small).loss == pytest.approx(engine.evaluate(vector).metrics["validation"].loss, rel=1e-5)
