"""Split a task's training rows among simulated clients with flwr-datasets partitioners.

The partitioners work on a ``datasets.Dataset``; we hand them one holding only the row index and
the label, so any classification task (built-in or user) can be partitioned without copying its
tensors into Arrow.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from datasets import Dataset
from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, Partitioner, ShardPartitioner


def make_partitioner(kind: str, value: float, clients: int, seed: int) -> Partitioner:
    """The flwr-datasets partitioner for ``iid``, ``dirichlet`` (alpha = value) or ``shards`` (per client)."""
    if kind == "iid":
        return IidPartitioner(num_partitions=clients)
    if kind == "dirichlet":
        return DirichletPartitioner(
            num_partitions=clients, partition_by="label", alpha=value, min_partition_size=5, seed=seed
        )
    if kind == "shards":
        return ShardPartitioner(
            num_partitions=clients, partition_by="label", num_shards_per_partition=int(value), seed=seed
        )
    raise ValueError(f"unknown partition {kind!r}; choose iid, dirichlet or shards")


def partition_indices(
    labels: npt.ArrayLike, kind: str, value: float, clients: int, seed: int
) -> list[npt.NDArray[np.int64]]:
    """Row indices of each client's data; the same for a given seed in every process."""
    y = np.asarray(labels).astype(np.int64).ravel()
    order = np.random.default_rng(seed).permutation(len(y))  # IidPartitioner takes contiguous blocks
    data = Dataset.from_dict({"row": order.tolist(), "label": y[order].tolist()})
    partitioner = make_partitioner(kind, value, clients, seed)
    partitioner.dataset = data
    try:
        parts = [np.asarray(partitioner.load_partition(i)["row"], dtype=np.int64) for i in range(clients)]
    except ValueError as exc:
        raise ValueError(f"federated.partition: cannot split {len(y)} rows among {clients} clients: {exc}") from None
    if any(len(p) == 0 for p in parts):
        raise ValueError(f"federated.partition: some of the {clients} clients got no data; use fewer clients")
    return parts
