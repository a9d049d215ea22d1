"""Calibration statistics across clients: pooled client replies equal the workers' own statistics of
all the clients' rows, so the server's scores are a central calibration's."""

from __future__ import annotations

import time

import pytest
import torch
from flwr.app import Message, MessageType, Metadata, RecordDict

from prunehive.workers.calibration import collect_stats
from prunehive.workers.federated.statistics import PooledStats, score_layers, stats_asked, stats_reply, weight_stats
from prunehive.workers.metrics import get_metric
from prunehive.workers.tasks.digits import DigitsMLP

NAMES = ["fc1", "fc2"]


def reply(node: int, content: RecordDict) -> Message:
    meta = Metadata(
        run_id=1,
        message_id=f"reply-{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=f"ask-{node}",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type=f"{MessageType.QUERY}.stats",
    )
    return Message(metadata=meta, content=content)  # type: ignore[call-overload]


def test_asked_statistics_follow_what_the_metric_reads() -> None:
    assert stats_asked("magnitude", "uniform") == () and stats_asked("random", "erk") == ()
    assert stats_asked("wanda", "uniform") == ("X",) and stats_asked("magnitude", "owl") == ("X",)
    assert stats_asked("snip", "uniform") == ("G",) and stats_asked("taylor", "uniform") == ("F",)
    assert stats_asked("expr:mul(abs(W), sqrt(abs(G)))", "uniform") == ("G",)


@pytest.mark.parametrize("masked", [False, True])
def test_pooled_client_statistics_equal_central_ones(masked: bool) -> None:
    task = DigitsMLP(seed=0)
    model = task.architecture()
    modules = dict(model.named_modules())
    masks = {}
    if masked:  # the server sent a pruned model: G and F travel only for the kept weights
        gen = torch.Generator().manual_seed(1)
        for n in NAMES:
            masks[f"{n}.weight"] = torch.rand(modules[n].weight.shape, generator=gen) > 0.5
            with torch.no_grad():
                modules[n].weight.mul_(masks[f"{n}.weight"])
    x, y = task.split("train")
    clients = [(x[:300], y[:300]), (x[300:420], y[300:420])]  # unequal shares, as with non-IID partitions
    weights = {f"{n}.weight": modules[n].weight.detach().clone() for n in NAMES}
    shares = [task.calibration_batches(8, data=rows) for rows in clients]
    everything = [b for batches in shares for b in batches]
    # Scaled to the rows of the central calibration it is compared with.
    pooled = PooledStats(weights, masks or None, reference_rows=sum(len(b[1]) for b in everything))
    for node, batches in enumerate(shares):
        stats = collect_stats(task, model, NAMES, with_grads=True, data=batches)
        content = stats_reply(stats, masks, ("F", "G", "X"), sum(len(b[1]) for b in batches), len(batches))
        pooled.add(reply(node, RecordDict(content)))  # type: ignore[arg-type]
    central = collect_stats(task, model, NAMES, with_grads=True, data=everything)
    for n, s in pooled.layer_stats().items():
        keep = masks[f"{n}.weight"] if masked else torch.ones_like(s.W, dtype=torch.bool)
        assert torch.allclose(s.X, central[n].X, rtol=1e-4)
        assert torch.allclose(s.G, central[n].G * keep, atol=1e-7)
        assert torch.allclose(s.F, central[n].F * keep, atol=1e-9)
        for metric in ("wanda", "snip", "taylor", "expr:mul(abs(W), X)"):
            ours = get_metric(metric)(s)
            assert torch.allclose(ours, get_metric(metric)(central[n]) * keep, rtol=1e-3, atol=1e-9)


def test_without_replies_there_is_nothing_to_score() -> None:
    pooled = PooledStats({"fc1.weight": torch.ones(2, 2)}, None, reference_rows=8)
    with pytest.raises(RuntimeError, match="no client returned calibration statistics"):
        pooled.layer_stats()


def test_weight_only_metrics_need_no_client() -> None:
    w = {"fc1.weight": torch.randn(4, 3), "fc2.weight": torch.randn(2, 4)}
    stats = weight_stats(w)
    assert torch.equal(score_layers("magnitude", stats, seed=0)["fc1.weight"], w["fc1.weight"].abs())
    first, again = score_layers("random", stats, seed=3), score_layers("random", stats, seed=3)
    assert torch.equal(first["fc2.weight"], again["fc2.weight"])
    assert not torch.equal(first["fc1.weight"], score_layers("random", stats, seed=4)["fc1.weight"])
