"""flwr-datasets partitioners over a task's labels: every row once, deterministic, skewed when asked."""

from __future__ import annotations

import numpy as np
import pytest

from prunehive.workers.federated.partition import partition_indices

LABELS = np.repeat(np.arange(10), 60)


@pytest.mark.parametrize(("kind", "value"), [("iid", 0.0), ("dirichlet", 0.5), ("shards", 2.0)])
def test_partitions_are_disjoint_and_repeatable(kind: str, value: float) -> None:
    parts = partition_indices(LABELS, kind, value, 6, seed=3)
    assert len(parts) == 6 and all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    if kind != "shards":  # shards may drop an incomplete last shard
        assert len(joined) == len(LABELS)
    again = partition_indices(LABELS, kind, value, 6, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_and_shards_skew_labels_iid_does_not() -> None:
    def classes(kind: str, value: float) -> float:
        return float(np.mean([len(np.unique(LABELS[p])) for p in partition_indices(LABELS, kind, value, 6, 0)]))

    assert classes("iid", 0.0) == 10
    assert classes("dirichlet", 0.1) < 8
    assert classes("shards", 2.0) <= 4


def test_too_many_clients_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"federated\.partition"):
        partition_indices(LABELS[:20], "shards", 2.0, 30, 0)
