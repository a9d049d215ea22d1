"""``hidenseek`` learns: the sparse model keeps its output scale, a round flips a bounded share of the
signs, and the server's vote needs a two-thirds majority. Either of the first two failing leaves the
federation at chance accuracy."""

from __future__ import annotations

import torch
from flwr.app import ConfigRecord

from prunehive.workers.federated.client_app import app as client_app
from prunehive.workers.federated.encoding import dense_record
from prunehive.workers.federated.local_grid import LocalGrid
from prunehive.workers.federated.models import start_model
from prunehive.workers.federated.plan_hidenseek import (
    HideNseekStrategy,
    initial_state,
    vote,
)
from prunehive.workers.federated.simulation import SimulationSettings, build_strategy
from prunehive.workers.tasks import load_task


def strategy(clients: int, sparsity: float, local_epochs: int = 5) -> HideNseekStrategy:
    settings = SimulationSettings(
        task="digits-cnn-bn",
        plan="hidenseek",
        targets=[sparsity],
        clients=clients,
        local_epochs=local_epochs,
        partition_kind="dirichlet",
        partition_value=0.5,
    )
    built = build_strategy(settings, lambda record: None)
    assert isinstance(built, HideNseekStrategy)
    return built


def test_the_pruned_model_keeps_the_dense_output_scale() -> None:
    task = load_task("digits-cnn-bn")
    plan = strategy(2, 0.95)
    x = task.split("train")[0][:256]
    outputs = []
    for state in (initial_state("digits-cnn-bn", 0, 0), plan.state):  # the seeded dense start, the served model
        model = start_model(task)
        model.load_state_dict(state)
        model.train()  # batch statistics, as clients train
        with torch.no_grad():
            outputs.append(model(x).std().item())
    dense, sparse = outputs
    assert 0.5 * dense < sparse < 2.0 * dense  # unscaled, 5% of the weights give logits ~7x smaller


def test_a_round_flips_a_bounded_share_of_the_global_signs() -> None:
    plan = strategy(10, 0.95)
    grid = LocalGrid(client_app, 10)
    before = {n: s.clone() for n, s in plan.signs.items()}
    masks = plan.tier_masks(0) or {}
    replies = grid.send_and_receive(plan.configure_train(1, dense_record(plan.state), ConfigRecord(), grid))
    plan.aggregate_train(1, replies)
    assert plan.current is not None and plan.current.replies == 10
    flipped = sum(int((plan.signs[n][m] != before[n][m]).sum()) for n, m in masks.items())
    share = flipped / sum(int(m.sum()) for m in masks.values())
    # Scores started at +-0.01 with a plain majority flipped ~20% of the signs every round: noise the
    # next round undid, and the federation stayed at chance.
    assert 0.0 < share < 0.1


def test_the_vote_flips_a_sign_only_on_a_two_thirds_majority() -> None:
    signs = torch.tensor([1.0, 1.0, -1.0, -1.0])
    votes = torch.tensor([-2.0, 0.0, 2.0, -4.0], dtype=torch.float64)  # the sum of 4 clients' signs, weight 1 each
    assert vote(signs, votes, 4.0).tolist() == [-1.0, 1.0, 1.0, -1.0]  # 3 of 4 against flip a sign; 2 of 4 do not
