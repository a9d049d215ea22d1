"""``export --format recipe`` read and applied by the real llm-compressor, which then prunes every layer to the
sparsity the job gave it.

llm-compressor pins an older transformers (and its own compressed-tensors and huggingface_hub) than prunehive,
so it is installed for this module alone: ``pip install --no-deps --target tests/artifacts/llmcompressor-site``
of the pins in ``tests/llmcompressor-requirements.txt`` (once; a changed file reinstalls), and
``llmcompressor_oneshot.py`` runs in a subprocess with that folder first on PYTHONPATH, so it imports those
pins and the project's own torch, and the project's environment is left as it is.

Two small searches on a tiny Llama (hidden size 128: llm-compressor's Wanda prunes a whole number of weights
per row, so the rows must be long for a layer to land within 0.01 of any sparsity) cover both modifiers
and both ways of giving sparsities: Wanda with a per-layer list, SparseGPT with one modifier per ``N:M``
pattern.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hf_models import causal_lm
from typer.testing import CliRunner

from prunehive.platform.cli import app

TESTS = Path(__file__).resolve().parents[1]
REQUIREMENTS = TESTS / "llmcompressor-requirements.txt"
SITE = TESTS / "artifacts" / "llmcompressor-site"
RUNNER = Path(__file__).with_name("llmcompressor_oneshot.py")
SMALL = {"calibration": 1024, "validation": 512, "test": 512}
runner = CliRunner()


def pinned(name: str) -> str:
    line = next(x for x in REQUIREMENTS.read_text().splitlines() if x.startswith(f"{name}=="))
    return line.split("==", 1)[1].strip()


def llmcompressor_site() -> Path:
    """The folder holding llm-compressor and its pins, installed from PyPI on first use (into a temporary
    folder renamed into place, so an interrupted install is never taken for a finished one)."""
    wanted = REQUIREMENTS.read_text()
    stamp = SITE / "requirements.txt"
    if stamp.exists() and stamp.read_text() == wanted:
        return SITE
    partial = SITE.with_name(f"{SITE.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps"]
    pip += ["--only-binary", ":all:", "--target", str(partial), "-r", str(REQUIREMENTS)]
    done = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"installing {REQUIREMENTS.name} failed:\n{done.stderr[-4000:]}"
    (partial / "requirements.txt").write_text(wanted)
    shutil.rmtree(SITE, ignore_errors=True)
    partial.rename(SITE)
    return SITE


@pytest.fixture(scope="module")
def home(module_home: Path) -> Path:
    """One job store and MLflow store for the module: later tests read the jobs that earlier ones ran."""
    return module_home


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The test suite's tiny Llama and text files, widened to hidden size 128 (intermediate 256)."""
    from transformers import AutoConfig, LlamaForCausalLM

    directory, data = causal_lm(tmp_path_factory.mktemp("recipe-llama"), "llama")
    config = AutoConfig.from_pretrained(directory)
    config.hidden_size, config.intermediate_size, config.head_dim = 128, 256, 64
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(directory)
    return {"hf": str(directory), "data": data, "seq_len": 16, "max_tokens": SMALL}


def invoke(*args: str) -> Any:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def spread_candidate(job_id: str) -> tuple[int, dict[str, float]]:
    """The job's completed candidate whose layers differ most (a uniform one could not show a misordered
    list), and its per-layer sparsities as the job measured them."""
    from prunehive.platform.settings import default_database_url
    from prunehive.platform.store.jobs import JobStore

    trials = [t for t in JobStore(default_database_url()).trials(job_id) if t.state == "complete" and t.result]
    best = max(trials, key=lambda t: max(t.result["layers"].values()) - min(t.result["layers"].values()))
    return best.candidate_id, {k: float(v) for k, v in best.result["layers"].items()}


def export_recipe(llama: dict[str, Any], pruning: dict[str, Any], root: Path) -> dict[str, Any]:
    """Run a small random search with ``pruning``, export its most varied candidate as a recipe."""
    spec = {
        "kind": "search",
        "task": llama,
        "pruning": {"sparsity": 0.5, **pruning},
        "search": {"strategy": "random", "budget": 3, "seed": 1},
        "resources": {"workers": 1},
    }
    root.mkdir(parents=True)
    (root / "spec.yaml").write_text(yaml.safe_dump(spec))
    summary = invoke("run", str(root / "spec.yaml"), "--json")
    assert summary["status"] == "succeeded"
    candidate, layers = spread_candidate(summary["job_id"])
    out = root / "recipe"
    invoke(
        "export", summary["job_id"], "--candidate", str(candidate), "--format", "recipe", "--out", str(out), "--json"
    )
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    return {"layers": layers, "recipe": recipe, "path": str(out / "recipe.yaml")}


def run_oneshot(cases: list[dict[str, Any]], root: Path) -> dict[str, Any]:
    """``llmcompressor_oneshot.py`` over ``cases`` with llm-compressor's folder first on the path, offline."""
    site = llmcompressor_site()
    (root / "cases.json").write_text(json.dumps(cases))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HOME=str(root / "hf-home"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    args = [sys.executable, str(RUNNER), str(root / "cases.json"), str(root / "out.json")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads((root / "out.json").read_text())


@pytest.mark.ray
def test_llmcompressor_reproduces_the_exported_allocation(
    llama: dict[str, Any], home: Path, local_ray: None, tmp_path: Path
) -> None:
    jobs = {
        "WandaPruningModifier": export_recipe(llama, {"metric": "wanda"}, tmp_path / "wanda"),
        "SparseGPTModifier": export_recipe(
            llama, {"solver": "sparsegpt", "granularity": "2:4"}, tmp_path / "sparsegpt-2of4"
        ),
    }
    wanda = jobs["WandaPruningModifier"]["recipe"]["sparsity_stage"]
    assert list(wanda) == ["sparsity_modifiers"]  # one modifier, a list in the job's layer order
    modifier = wanda["sparsity_modifiers"]["WandaPruningModifier"]
    pruned = {name: s for name, s in jobs["WandaPruningModifier"]["layers"].items() if s > 0}
    assert modifier["targets"] == list(pruned) and modifier["sparsity"] == list(pruned.values())
    assert modifier["mask_structure"] == "0:0" and "block_size" not in modifier
    nm = jobs["SparseGPTModifier"]["recipe"]["sparsity_stage"]
    assert len(nm) > 1, nm  # the candidate mixes patterns: one modifier group per pattern
    for group in nm.values():
        args = group["SparseGPTModifier"]
        assert args["block_size"] == 128 and args["dampening_frac"] == 0.01

    cases = [{"model": llama["hf"], "recipe": job["path"], "text": llama["data"]["validation"], "seq_len": 32,
              "samples": 8} for job in jobs.values()]  # fmt: skip
    result = run_oneshot(cases, tmp_path)
    assert result["versions"]["llmcompressor"] == pinned("llmcompressor")
    assert result["versions"]["transformers"] == pinned("transformers")  # the folder's, not the project's
    assert result["torch_file"] == torch.__file__  # the project's torch
    for (kind, job), case in zip(jobs.items(), result["cases"], strict=True):
        parsed = case["modifiers"]
        assert {m["type"] for m in parsed} == {kind}
        for m, enumerated in zip(parsed, case["enumerated"], strict=True):
            assert enumerated == m["args"]["targets"]  # llm-compressor indexes `sparsity` in the listed order
        gaps = {name: abs(case["sparsity"][name] - s) for name, s in job["layers"].items()}
        print(f"{kind}: max |llm-compressor - job| per-layer sparsity {max(gaps.values()):.4f}")
        assert max(gaps.values()) <= 0.01, gaps
        untouched = set(case["sparsity"]) - set(job["layers"])
        assert untouched == {"lm_head"} and case["sparsity"]["lm_head"] == 0.0


def test_channel_jobs_are_refused_in_one_line(home: Path, tmp_path: Path) -> None:
    """Whole output channels are no llm-compressor mask structure: one line, exit 2, nothing written."""
    from prunehive.platform.settings import default_database_url
    from prunehive.platform.store.jobs import JobStore

    spec = {"kind": "search", "task": "digits-mlp", "pruning": {"granularity": "channel"}}
    job = JobStore(default_database_url()).create_job("search", "c", spec, status="succeeded")
    result = runner.invoke(app, ["export", job, "--format", "recipe", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "unstructured or N:M" in result.output and not (tmp_path / "r").exists()


def test_modifier_follows_the_jobs_solver_and_metric() -> None:
    """SparseGPT for the sparsegpt solver and for metrics llm-compressor has no one-shot modifier for (with a
    note saying so), Wanda for Wanda; dense layers are left out; N:M layers grouped by pruned weights per group."""
    from prunehive.platform.jobs.export_formats import modifier_for, recipe

    layers = {"a": 0.5, "b": 0.0, "c": 0.25}
    magnitude = recipe(layers, "magnitude", "unstructured")["sparsity_stage"]["sparsity_modifiers"]
    assert magnitude == {
        "SparseGPTModifier": {
            "sparsity": [0.5, 0.25], "mask_structure": "0:0", "targets": ["a", "c"], "block_size": 128,
            "dampening_frac": 0.01,
        }
    }  # fmt: skip
    assert "no one-shot modifier for metric magnitude" in str(modifier_for("magnitude", "mask")[1])
    assert modifier_for("magnitude", "sparsegpt") == ("SparseGPTModifier", None)
    assert modifier_for("wanda", "sparsegpt")[0] == "SparseGPTModifier" and modifier_for("wanda", "sparsegpt")[1]
    assert modifier_for("wanda", "mask") == ("WandaPruningModifier", None)
    stage = recipe({"a": 0.75, "b": 0.5, "c": 0.75}, "wanda", "1:4")["sparsity_stage"]  # keep 1 of 4 = prune 3
    assert stage == {
        "sparsity_2_4_modifiers": {
            "WandaPruningModifier": {"sparsity": 0.5, "mask_structure": "2:4", "targets": ["b"]}
        },
        "sparsity_3_4_modifiers": {
            "WandaPruningModifier": {"sparsity": 0.75, "mask_structure": "3:4", "targets": ["a", "c"]}
        },
    }
    with pytest.raises(ValueError, match="prunes no weight"):
        recipe({"a": 0.0}, "wanda", "unstructured")
