"""SparseGPT: its update reconstructs a layer's outputs better than masking, and pruning is sequential."""

from __future__ import annotations

import json
import subprocess
import sys

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
