"""Mask-aware aggregation as pure functions, fed with fake Flower replies (no simulation)."""

from __future__ import annotations

import time

import pytest
import torch
from flwr.app import Error, Message, MessageType, Metadata, MetricRecord, RecordDict

from prunehive.workers.federated.aggregation import collect_updates, masked_average
from prunehive.workers.federated.encoding import encode


def reply(node: int, content: RecordDict | None = None, error: Error | None = None) -> Message:
    meta = Metadata(
        run_id=1,
        message_id=f"reply-{node}",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id=f"ins-{node}",
        group_id="1",
        created_at=time.time(),
        ttl=60.0,
        message_type=MessageType.TRAIN,
    )
    return Message(metadata=meta, content=content, error=error)  # type: ignore[call-overload]


def train_reply(node: int, state: dict[str, torch.Tensor], mask: dict[str, torch.Tensor], n: int) -> Message:
    content = RecordDict(
        {
            "arrays": encode(state, mask, send_masks=False),
            "metrics": MetricRecord({"num-examples": n, "accuracy": 0.5, "train-loss": 1.0}),
        }
    )
    return reply(node, content)


TEMPLATE = {"w": torch.zeros(2, 3), "b": torch.zeros(2)}
MASK_A = {"w": torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)}
MASK_B = {"w": torch.tensor([[1, 0, 0], [0, 0, 0]], dtype=torch.bool)}  # nested in MASK_A


def test_each_weight_is_averaged_over_the_clients_that_keep_it() -> None:
    a = {"w": torch.full((2, 3), 1.0) * MASK_A["w"], "b": torch.tensor([1.0, 1.0])}
    b = {"w": torch.full((2, 3), 4.0) * MASK_B["w"], "b": torch.tensor([4.0, 4.0])}
    replies = [train_reply(11, a, MASK_A, 30), train_reply(12, b, MASK_B, 10)]
    updates, failed = collect_updates(replies, {11: MASK_A, 12: MASK_B}, TEMPLATE)
    assert not failed and [u.weight for u in updates] == [30.0, 10.0]
    previous = {"w": torch.full((2, 3), 9.0), "b": torch.zeros(2)}
    out = masked_average(updates, previous)
    # (0,0) kept by both: (30*1 + 10*4) / 40; (0,1), (1,0) kept by A only: A's value; the rest: nobody, previous.
    assert out["w"][0, 0].item() == pytest.approx(70 / 40)
    assert out["w"][0, 1].item() == out["w"][1, 0].item() == 1.0
    assert out["w"][0, 2].item() == out["w"][1, 1].item() == 9.0
    assert torch.allclose(out["b"], torch.full((2,), 70 / 40))  # unmasked tensors: plain FedAvg


def test_failed_replies_are_set_apart_and_not_averaged() -> None:
    good = {"w": torch.ones(2, 3) * MASK_A["w"], "b": torch.ones(2)}
    replies = [train_reply(11, good, MASK_A, 5), reply(12, error=Error(code=0, reason="ClientAppException: boom"))]
    updates, failed = collect_updates(replies, {11: MASK_A, 12: MASK_A}, TEMPLATE)
    assert [u.node_id for u in updates] == [11]
    assert len(failed) == 1 and "boom" in failed[0].error.reason
    out = masked_average(updates, {"w": torch.zeros(2, 3), "b": torch.zeros(2)})
    assert torch.equal(out["w"], MASK_A["w"].float())
