"""SparseGPT: its update reconstructs a layer's outputs better than masking, and pruning is sequential."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from prunehive.workers.masks import Granularity, Ranking
from prunehive.workers.solvers import walk
from prunehive.workers.solvers.sequential import prune_sequential
from prunehive.workers.solvers.sparsegpt import Hessian, ObsLayer
from prunehive.workers.tasks.code_lm import CodeLMTask
from prunehive.workers.tasks.digits import DigitsCNN, DigitsMLP


def correlated_inputs(n: int, dim: int, seed: int) -> torch.Tensor:
    """Inputs with correlated channels of unequal scale, as real activations have (what OBS exploits)."""
    gen = torch.Generator().manual_seed(0)  # one distribution; ``seed`` draws its samples
    mix = torch.randn(dim, dim, generator=gen) / dim**0.5
    scale = torch.rand(dim, generator=gen) * 2 + 0.1
    return (torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) @ mix) * scale


@pytest.mark.parametrize(("granularity", "sparsity"), [("unstructured", 0.5), ("2:4", 0.5)])
def test_sparsegpt_reconstructs_better_than_the_mask_alone(granularity: str, sparsity: float) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(256, 64, bias=False)
    calib, held_out = correlated_inputs(2048, 256, seed=1), correlated_inputs(1024, 256, seed=2)
    gran = Granularity.parse(granularity)
    hessian = Hessian(layer)
    hessian.add(calib)
    obs = ObsLayer(layer.weight.data, hessian.mean())
    pruned = obs.prune(sparsity, gran, metric="wanda")  # the same Wanda mask choice, plus the update
    x_norm = calib.pow(2).sum(0).sqrt()
    wanda_mask = Ranking.build(layer.weight.abs() * x_norm, gran).mask(sparsity)
    masked = layer.weight.data * wanda_mask

    dense_out = held_out @ layer.weight.data.t()
    obs_error = (held_out @ pruned.t() - dense_out).pow(2).mean()
    mask_error = (held_out @ masked.t() - dense_out).pow(2).mean()
    assert obs_error < 0.8 * mask_error
    assert int((pruned == 0).sum()) == int((~wanda_mask).sum()) == round(sparsity * pruned.numel())
    if gran.kind == "nm":  # exactly two of every four consecutive weights survive
        assert bool(((pruned != 0).reshape(64, -1, 4).sum(-1) == 2).all())
    # SparseGPT's own saliency does at least as well as the Wanda mask with the update
    own = obs.prune(sparsity, gran)
    assert (held_out @ own.t() - dense_out).pow(2).mean() < mask_error


def pruned_at_scale(layer: nn.Linear, calib: torch.Tensor, scale: float, granularity: str, metric: str) -> torch.Tensor:
    hessian = Hessian(layer)
    hessian.add(calib * scale)
    return ObsLayer(layer.weight.data, hessian.mean()).prune(0.5, Granularity.parse(granularity), metric)


@pytest.mark.parametrize("metric", ["magnitude", "wanda"])
@pytest.mark.parametrize("granularity", ["unstructured", "2:4"])
def test_dead_inputs_are_pruned_for_free_whatever_the_input_scale(granularity: str, metric: str) -> None:
    """Every 10th input always zero (dead units): their weights go first and count among the pruned, and
    neither the mask nor the relative error depends on the activations' scale (the damping scales with them)."""
    torch.manual_seed(0)
    layer = nn.Linear(320, 64, bias=False)  # three blocks of columns: 128, 128, 64
    dead = torch.arange(320) % 10 == 0
    calib, held_out = correlated_inputs(2048, 320, seed=1), correlated_inputs(1024, 320, seed=2)
    calib[:, dead], held_out[:, dead] = 0.0, 0.0
    masks, errors = [], []
    for scale in (0.1, 1.0, 10.0):
        pruned = pruned_at_scale(layer, calib, scale, granularity, metric)
        assert int((pruned[:, dead] != 0).sum()) == 0, f"dead-input weights kept at scale {scale}"
        assert int((pruned == 0).sum()) == pruned.numel() // 2  # the dead ones among the 50%
        if granularity == "2:4":
            assert bool(((pruned != 0).reshape(64, -1, 4).sum(-1) == 2).all())
        dense_out = (held_out * scale) @ layer.weight.data.t()
        errors.append(float(((held_out * scale) @ pruned.t() - dense_out).pow(2).mean() / dense_out.pow(2).mean()))
        masks.append(pruned == 0)
    for scale, mask, error in zip((0.1, 1.0, 10.0), masks, errors, strict=True):
        agreement = float((mask == masks[1]).float().mean())
        assert agreement >= 0.999, f"the mask at scale {scale} agrees with scale 1's on {agreement:.2%} only"
        assert error == pytest.approx(errors[1], rel=0.01)


def test_dead_inputs_go_even_past_the_requested_sparsity() -> None:
    """More dead inputs than the sparsity removes (in a block, or in an N:M group): all of them still go."""
    torch.manual_seed(0)
    layer = nn.Linear(8, 4, bias=False)
    x = torch.randn(256, 8)
    x[:, :3] = 0.0  # three of the first group of four inputs are dead
    hessian = Hessian(layer)
    hessian.add(x)
    obs = ObsLayer(layer.weight.data, hessian.mean())
    unstructured = obs.prune(0.25, Granularity.parse("unstructured"))  # 8 of 32 asked, 12 dead
    assert bool((unstructured[:, :3] == 0).all()) and int((unstructured[:, 3:] == 0).sum()) == 0
    nm = obs.prune(0.5, Granularity.parse("2:4"))
    assert bool((nm[:, :3] == 0).all()) and bool((nm[:, 3] != 0).all())  # the group keeps its one live weight
    assert bool(((nm[:, 4:] != 0).sum(1) == 2).all())  # the next group is plain 2:4
    silent = ObsLayer(layer.weight.data, torch.zeros(8, 8))  # a layer that never saw a non-zero input
    assert int(silent.prune(0.5, Granularity.parse("unstructured")).count_nonzero()) == 0


@pytest.mark.parametrize("setting", [(0.5, None), (0.7, None), (0.5, (2, 4))])
def test_the_solver_agrees_with_the_papers_rule_as_scripts_check_references_implements_it(
    setting: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The independent SparseGPT of scripts/reference_rules.py (the reference's conventions), compared by
    scripts/check_references.py, and the solver choose the same weights and reach the same held-out error,
    dead inputs included."""
    path = Path(__file__).parents[2] / "scripts" / "check_references.py"
    monkeypatch.syspath_prepend(str(path.parent))  # its sibling reference_rules.py, as when run as a script
    spec = importlib.util.spec_from_file_location("check_references", path)
    assert spec is not None and spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    torch.manual_seed(0)
    layer = nn.Linear(320, 48, bias=False)
    inputs = check.Inputs(layer)
    for split, seed in (("calibration", 1), ("heldout", 2)):
        x = correlated_inputs(2048, 320, seed=seed)
        x[:, ::10] = 0.0
        inputs.add(x.reshape(16, 128, 320), split)  # 16 sequences of 128 tokens
    row = check.compare_sparsegpt({"layer": inputs}, setting[0], setting[1], repeats=1)
    assert row["agreement"] >= 0.999 and row["dead_weights"] == 48 * 32
    assert row["dead_weights_kept"] == row["reference_dead_weights_kept"] == 0
    assert row["heldout_error"] == pytest.approx(row["reference_heldout_error"], rel=0.01)


def test_zero_sparsity_leaves_the_weight_unchanged() -> None:
    layer = nn.Linear(32, 8)
    hessian = Hessian(layer)
    hessian.add(torch.randn(100, 32))
    assert torch.equal(ObsLayer(layer.weight.data, hessian.mean()).prune(0.0, Granularity.parse("unstructured")),
                       layer.weight.data)  # fmt: skip


def test_conv_layers_are_pruned_through_unfolded_inputs() -> None:
    conv = nn.Conv2d(4, 8, 3, padding=1)
    x = torch.randn(16, 4, 6, 6)
    hessian = Hessian(conv)
    hessian.add(x)
    assert hessian.count == 16 * 36 and hessian.sum.shape == (36, 36)
    pruned = ObsLayer(conv.weight.data, hessian.mean()).prune(0.5, Granularity.parse("unstructured"))
    assert pruned.shape == conv.weight.shape and int((pruned == 0).sum()) == conv.weight.numel() // 2


class QuickMLP(DigitsMLP):
    train_steps = 100


class QuickCNN(DigitsCNN):
    train_steps = 50


@pytest.mark.parametrize("task_class", [QuickMLP, QuickCNN])
def test_sequential_pruning_keeps_the_model_and_beats_masking(task_class: type[DigitsMLP]) -> None:
    task = task_class(seed=0)
    model = task.model()
    names = task.prunable_layers(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sparsity = dict.fromkeys(names, 0.8)
    pruned = prune_sequential(task, model, sparsity, Granularity.parse("unstructured"), task.calibration_batches(4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # restored exactly
    for name, weight in pruned.items():
        assert weight.shape == dict(model.named_modules())[name].weight.shape
        assert abs(float((weight == 0).float().mean()) - 0.8) < 0.01
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, weight in pruned.items():
            modules[name].weight.copy_(weight)
        solved = task.evaluate(model, "validation").quality
        for name in names:
            w = before[f"{name}.weight"]
            modules[name].weight.copy_(w * Ranking.build(w.abs(), Granularity.parse("unstructured")).mask(0.8))
        masked = task.evaluate(model, "validation").quality
        model.load_state_dict(before)
    assert solved > masked
    if task_class is QuickMLP:  # pixels constant at zero over the calibration batches: their weights go
        pixels = torch.cat([x for x, _ in task.calibration_batches(4)])
        dead = (pixels == 0).all(0)
        assert bool(dead.any()) and int((pruned["fc1"][:, dead] != 0).sum()) == 0


def test_prune_command_with_the_sparsegpt_solver() -> None:
    from typer.testing import CliRunner

    from prunehive.platform.cli import app

    runner = CliRunner()
    args = ["prune", "--task", "digits-mlp", "--sparsity", "0.9", "--json"]
    solved = runner.invoke(app, [*args, "--solver", "sparsegpt"])
    assert solved.exit_code == 0, solved.output
    masked = json.loads(runner.invoke(app, args).stdout)
    obj = json.loads(solved.stdout)
    assert obj["solver"] == "sparsegpt" and masked["solver"] == "mask"
    assert set(obj) == set(masked)  # the same keys as every other prune
    assert obj["achieved_sparsity"] == pytest.approx(0.9, abs=1e-3)
    assert obj["metrics"]["validation"]["accuracy"] > masked["metrics"]["validation"]["accuracy"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solver", "obs"], "solver 'obs' is not one of mask, sparsegpt"),
        (["--solver", "sparsegpt", "--granularity", "channel"], "not channel"),
        (["--solver", "sparsegpt", "--metric", "snip"], "reads gradients"),
    ],
)
def test_bad_solver_input_is_one_line(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "prunehive.platform.cli", "prune", "--task", "digits-mlp", *args],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


class RandomCodeLM(CodeLMTask):
    """code-lm's 4-block Llama, untrained: the block walk only needs the architecture."""

    def load_model(self) -> nn.Module:
        torch.manual_seed(0)
        return self.architecture()


def test_decoder_blocks_are_walked_as_a_chain_with_the_dense_models_inputs() -> None:
    task = RandomCodeLM(seed=0)
    model = task.model()
    names = task.prunable_layers(model)
    batches = [(x[:4], y[:4]) for x, y in task.calibration_batches(2)]
    groups = walk.block_groups(task, model, names)
    chain = walk._chain(model, [block for block, _ in groups])
    assert chain is not None and len(chain) == 4
    assert walk._chained_inputs(model, chain, batches) is not None  # the chain check passed
    seen = 0
    for layers, hessians in walk.hessian_groups(task, model, names, batches):
        whole = walk._collect(model, layers, lambda: [walk._run_model(model, x) for x, _ in batches])
        for name in layers:
            assert torch.allclose(hessians[name].sum, whole[name].sum, rtol=1e-4, atol=1e-4), name
            assert hessians[name].count == 2 * 4 * 128
        seen += len(layers)
    assert seen == len(names) == 28
