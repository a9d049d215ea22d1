"""Named federated plans without a simulation: sign supermasks, FedDST's exact sparsity, SynFlow,
FedTiny's candidates and budget, cost measurement, and the spec's rules."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from prunehive.platform.spec import federated as spec_federated
from prunehive.platform.spec.job import SpecError, parse_spec
from prunehive.workers.federated import plans
from prunehive.workers.federated.aggregation import ClientUpdate
from prunehive.workers.federated.client_app import reapply
from prunehive.workers.federated.client_cost import plain_loss, training_cost
from prunehive.workers.federated.plan_common import global_keep, prune_and_grow
from prunehive.workers.federated.plan_feddst import readjust, vote_masks
from prunehive.workers.federated.plan_fedtiny import adapted_loss
from prunehive.workers.federated.plan_hidenseek import (
    SIGNS,
    SignSupermask,
    pack_signs,
    supermask_record,
    synflow_masks,
    unpack_signs,
)
from prunehive.workers.federated.simulation import SimulationSettings, build_strategy
from prunehive.workers.tasks import load_task

PRUNEHIVE = str(Path(sys.executable).parent / "prunehive")


def cnn() -> tuple[torch.nn.Module, list[str]]:
    task = load_task("digits-cnn-bn")
    torch.manual_seed(0)
    model = task.architecture()
    return model, [f"{n}.weight" for n in task.prunable_layers(model)]


def test_a_sign_supermask_round_trip_is_one_bit_per_kept_weight() -> None:
    model, names = cnn()
    gen = torch.Generator().manual_seed(1)
    masks = {n: torch.rand(model.get_parameter(n).shape, generator=gen) < 0.07 for n in names}
    signs = {n: torch.where(torch.rand(m.shape, generator=gen) < 0.5, -1.0, 1.0) for n, m in masks.items()}
    record = supermask_record(model.state_dict(), masks, signs, with_masks=False)
    for n, mask in masks.items():
        kept = int(mask.sum())
        assert record[n + SIGNS].numpy().nbytes == math.ceil(kept / 8)  # packed: one bit per kept weight
        back = unpack_signs(record[n + SIGNS].numpy(), mask)
        assert torch.equal(back[mask], signs[n][mask]) and bool((back[~mask] == 1).all())
        assert n not in record  # no weight value travels
    kept_total = sum(int(m.sum()) for m in masks.values())
    sign_bytes = sum(record[n + SIGNS].numpy().nbytes for n in masks)
    assert sign_bytes <= kept_total / 8 + len(masks)


def test_sign_supermask_trains_signs_over_fixed_magnitudes() -> None:
    model, names = cnn()
    gen = torch.Generator().manual_seed(3)
    masks = {n: torch.rand(model.get_parameter(n).shape, generator=gen) < 0.3 for n in names}
    signs = {n: torch.ones_like(m, dtype=torch.float32) for n, m in masks.items()}
    initial = {n: model.get_parameter(n).detach().clone() * masks[n] for n in names}
    with torch.no_grad():
        for n in names:
            model.get_parameter(n).copy_(initial[n])
    net = SignSupermask(model, masks, signs)
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    net.eval()
    assert torch.allclose(net(x), model(x))  # all signs +1: the kept initial weights
    net.train()
    net(x).sum().backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in net.scores)
    with torch.no_grad():
        net.scores[0].neg_()
    flipped = net.signs()[names[0]]
    assert bool((flipped[masks[names[0]]] == -1).all())
    assert torch.equal(net.weights()[names[0]], -initial[names[0]])


def test_pack_signs_counts_only_kept_positions() -> None:
    mask = torch.tensor([True, False, True, True, False] * 5)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0] * 5)
    bits = pack_signs(signs, mask)
    assert bits.nbytes == 2 and torch.equal(unpack_signs(bits, mask)[mask], signs[mask])


def test_feddst_readjustment_and_vote_keep_the_sparsity_exact() -> None:
    model, names = cnn()
    gen = torch.Generator().manual_seed(2)
    masks = {n: torch.rand(model.get_parameter(n).shape, generator=gen) < 0.1 for n in names}
    grads = {n: torch.randn(m.shape, generator=gen) for n, m in masks.items()}
    new = readjust(model, masks, grads, 0.3)
    for n in names:
        assert int(new[n].sum()) == int(masks[n].sum())  # exact per tensor
        assert not torch.equal(new[n], masks[n])  # something moved
        assert bool((model.get_parameter(n)[~new[n]] == 0).all())  # the dropped weights are zero now
    updates = [
        ClientUpdate(i, {n: torch.randn(m.shape) for n, m in masks.items()}, m, float(10 + i))
        for i, m in enumerate([masks, new, readjust(model, new, grads, 0.2)])
    ]
    voted = vote_masks(updates, masks, {n: model.get_parameter(n).detach() for n in names})
    assert {n: int(v.sum()) for n, v in voted.items()} == {n: int(m.sum()) for n, m in masks.items()}
    both = masks[names[1]] & new[names[1]]
    assert bool(voted[names[1]][both].all())  # weights two of three clients (the heavier ones) kept survive


def test_prune_and_grow_swaps_smallest_for_largest_gradient() -> None:
    weight = torch.tensor([0.1, 5.0, 3.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([True, True, True, False, False, False])
    grow = torch.tensor([0.0, 0.0, 0.0, 0.2, 9.0, 0.1])
    assert prune_and_grow(weight, mask, grow, 1).tolist() == [False, True, True, False, True, False]


def test_global_keep_respects_floors_and_total() -> None:
    scores = {"a": torch.arange(10.0), "b": torch.arange(10.0) * 100}
    masks = global_keep(scores, 6, {"a": 2})
    assert int(masks["a"].sum()) == 2 and int(masks["b"].sum()) == 4 and bool(masks["a"][-2:].all())


def test_synflow_keeps_exactly_the_target_and_every_layer() -> None:
    model, names = cnn()
    masks = synflow_masks(model, names, torch.zeros(1, 1, 8, 8), 0.95)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == round(total * 0.05)
    assert all(int(m.sum()) > 0 for m in masks.values())  # SynFlow avoids layer collapse


def test_fedtiny_adapts_batchnorm_before_scoring() -> None:
    task = load_task("digits-cnn-bn")
    model, names = cnn()
    x, y = task.split("train")
    batches = [(x[:64], y[:64]), (x[64:128], y[64:128])]
    masks = {n: torch.ones_like(model.get_parameter(n), dtype=torch.bool) for n in names}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapted = adapted_loss(task, model, masks, batches)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the received model is untouched
    model.eval()
    with torch.no_grad():
        plain = sum(float(task.loss_fn(model(a), b)) * len(b) for a, b in batches)
    assert adapted != pytest.approx(plain)  # fresh statistics (mean 0, var 1) are not the data's


def test_fedtiny_scores_each_candidate_after_training_it_under_its_mask() -> None:
    """At initialisation every candidate's adapted loss reads about ln 10; a local epoch under the candidate's
    mask is what tells a trainable allocation from one that starves a layer."""
    task = load_task("digits-cnn-bn")
    model, names = cnn()
    x, y = task.split("train")
    batches = [(x[:64], y[:64]), (x[64:128], y[64:128])]
    masks = {
        n: torch.rand(model.get_parameter(n).shape, generator=torch.Generator().manual_seed(1)) > 0.8 for n in names
    }
    trained: list[torch.nn.Module] = []

    def local(net: torch.nn.Module) -> None:
        task.train(
            net, 24, after_step=reapply(net, masks), seed=0, data=(x[:256], y[:256]), batch_size=32, cosine=False
        )
        trained.append(net)

    untrained = adapted_loss(task, model, masks, batches)
    after = adapted_loss(task, model, masks, batches, local)
    assert after < 0.9 * untrained
    (net,) = trained
    assert all(not net.get_parameter(n)[~masks[n]].any() for n in names)  # trained under the candidate's mask


def settings(plan: str, **kw: object) -> SimulationSettings:
    return SimulationSettings(task="digits-cnn-bn", plan=plan, targets=[0.95], clients=2, rounds=2, **kw)  # type: ignore[arg-type]


def test_fedtiny_drops_candidates_over_budget() -> None:
    strategy = build_strategy(settings("fedtiny", client_budget={"flops": 0.2}), lambda r: None)
    assert 1 <= len(strategy.candidates) <= 6  # type: ignore[attr-defined]


def test_fedtiny_random_candidates_keep_every_layer_near_uniform_density() -> None:
    """At 95%, perturbing sparsity by 0.1 put layers at the 1% density floor (a conv with a handful of weights);
    the perturbation is relative to the density, so every layer keeps a fair share of uniform's 5%."""
    for seed in (0, 1, 2):
        strategy = build_strategy(settings("fedtiny", seed=seed), lambda r: None)
        for candidate in strategy.candidates[3:]:  # type: ignore[attr-defined]
            densities = [float(m.float().mean()) for m in candidate.values()]
            assert min(densities) > 0.25 * 0.05, (seed, densities)
            kept = sum(float(m.sum()) for m in candidate.values()) / sum(m.numel() for m in candidate.values())
            assert kept == pytest.approx(0.05, abs=2e-3)  # still exactly the budget


def test_fedtiny_with_a_budget_no_mask_meets_is_refused() -> None:
    with pytest.raises(ValueError, match=r"federated\.client_budget: no fedtiny mask at sparsity 0\.95 meets flops"):
        build_strategy(settings("fedtiny", client_budget={"flops": 0.001}), lambda r: None)


def test_training_cost_scales_with_the_kept_fraction() -> None:
    task = load_task("digits-cnn-bn")
    model, names = cnn()
    x, y = task.split("train")
    masks = {n: torch.rand(model.get_parameter(n).shape) < 0.05 for n in names}
    dense = training_cost(model, plain_loss(task.loss_fn), (x[:32], y[:32]), {}, 10)
    sparse = training_cost(model, plain_loss(task.loss_fn), (x[:32], y[:32]), masks, 10)
    assert 0.02 < sparse.flops / dense.flops < 0.2
    assert sparse.peak_bytes < dense.peak_bytes


def test_spec_and_workers_name_the_same_plans() -> None:
    assert spec_federated.NAMED_PLANS == plans.NAMED_PLANS
    for name in plans.NAMED_PLANS:
        assert (
            parse_spec({"kind": "federated", "task": "digits-cnn-bn", "pruning": {"plan": name}}).pruning.plan == name
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"pruning": {"plan": "hidenseek", "granularity": "channel"}}, "pruning.granularity: hidenseek learns a sign"),
        ({"pruning": {"plan": "hidenseek", "granularity": "2:4"}}, "pruning.granularity: hidenseek"),
        ({"pruning": {"plan": "feddst", "granularity": "channel"}}, "pruning.granularity: feddst chooses"),
        ({"pruning": {"plan": "fixed"}, "federated": {"client_budget": {"flops": 0.5}}}, "federated.client_budget: a"),
        ({"pruning": {"plan": "fedtiny"}, "federated": {"client_budget": {"flops": 1.5}}}, "federated.client_budget:"),
        ({"pruning": {"plan": "fedtiny"}, "federated": {"client_budget": {"watts": 1}}}, "federated.client_budget:"),
        ({"pruning": {"plan": "autoflip"}, "federated": {"mask_interval": 2}}, "federated.mask_interval:"),
        ({"pruning": {"plan": "prunefl", "allocation": "erk"}}, "pruning.allocation: prunefl"),
    ],
)
def test_bad_named_plan_fields_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=message.replace(".", r"\.")) as err:
        parse_spec({"kind": "federated", "task": "digits-cnn-bn", **fields})
    assert "\n" not in str(err.value)


def test_hidenseek_with_channels_is_one_line_and_exit_2(home: Path) -> None:
    spec = {"kind": "federated", "task": "digits-cnn-bn", "pruning": {"plan": "hidenseek", "granularity": "channel"}}
    path = home / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = subprocess.run(
        [PRUNEHIVE, "run", str(path)], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hidenseek" in lines[0] and "unstructured" in lines[0]


def test_autoflip_guidance_prunes_channels_and_weights_at_the_target() -> None:
    strategy = build_strategy(settings("autoflip"), lambda r: None)
    gen = torch.Generator().manual_seed(4)
    for n in strategy.prunable:  # convolutions moved ten times further than the linear layers
        strategy.movement[n] = torch.rand(strategy.state[n].shape, generator=gen) * (0.1 if "conv" in n else 0.01)  # type: ignore[attr-defined]
    masks = strategy.guided_masks()  # type: ignore[attr-defined]
    total = sum(m.numel() for m in masks.values())
    assert 1 - sum(int(m.sum()) for m in masks.values()) / total == pytest.approx(0.95, abs=1e-3)
    dropped = {n: int((~m.reshape(m.shape[0], -1).any(1)).sum()) for n, m in masks.items()}
    assert sum(dropped.values()) > 0 and dropped["fc2.weight"] == 0  # whole channels go, never output classes
    conv_density = masks["conv2.weight"].float().mean()
    assert conv_density > masks["fc1.weight"].float().mean()  # the layer that moved more keeps more
