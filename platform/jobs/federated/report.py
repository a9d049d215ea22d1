"""What a federated run records: a round progress bar, per-round MLflow metrics, its two plots and its
per-round table (its summary for people is rendered by ``platform/cli/summaries.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure
from rich.progress import TextColumn

from prunehive.platform.jobs.progress import StderrBar
from prunehive.platform.tracking.plots import new_figure
from prunehive.workers.federated.strategy import RoundRecord


class RoundProgress(StderrBar):
    """Rounds done of total, with the last round's test accuracy and failures."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        super().__init__("[bold]{task.description}", TextColumn("{task.fields[status]}"), enabled=enabled)
        self.task = self.progress.add_task("federated", total=total, status="")

    def update(self, label: str, record: RoundRecord, failures: int) -> None:
        acc = ", ".join(f"{a:.3f}" for a in record.test_accuracy)
        status = f"{label} round {record.round}: test accuracy {acc}, failures {failures}"
        self.progress.update(self.task, advance=1, description=label, status=status)


def round_metrics(record: RoundRecord, cumulative_up: int, failures: int) -> dict[str, float]:
    """Per-round MLflow metrics; with tiers, ``test_accuracy``/``sparsity`` are the most-pruned tier's."""
    metrics = {
        "test_accuracy": record.test_accuracy[-1],
        "client_accuracy": record.client_accuracy,
        "train_loss": record.train_loss,
        "sparsity": record.sparsity[-1],
        "bytes_up": record.bytes_up,
        "bytes_down": record.bytes_down,
        "dense_bytes_up": record.dense_bytes_up,
        "dense_bytes_down": record.dense_bytes_down,
        "cumulative_bytes_up": cumulative_up,
        "client_flops": record.client_flops,
        "peak_client_bytes": record.peak_client_bytes,
        "failures": record.failures,
        "cumulative_failures": failures,
        "replies": record.replies,
        "round_seconds": record.seconds,
    }
    if len(record.test_accuracy) > 1:
        for t, (acc, sp) in enumerate(zip(record.test_accuracy, record.sparsity, strict=True)):
            metrics[f"tier{t}.test_accuracy"] = acc
            metrics[f"tier{t}.sparsity"] = sp
    return {k: float(v) for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


def _curves(history: Sequence[RoundRecord], labels: Sequence[str]) -> list[tuple[str, list[float]]]:
    return [(label, [r.test_accuracy[t] for r in history]) for t, label in enumerate(labels)]


def accuracy_vs_round(series: dict[str, Sequence[RoundRecord]], tier_labels: dict[str, list[str]]) -> Figure:
    """Global test accuracy per round, one line per run (and per tier)."""
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    for run, history in series.items():
        for label, values in _curves(history, tier_labels[run]):
            ax.plot([r.round for r in history], values, marker="o", markersize=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("global test accuracy")
    ax.set_title("accuracy per round")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def accuracy_vs_bytes(series: dict[str, Sequence[RoundRecord]], tier_labels: dict[str, list[str]]) -> Figure:
    """Global test accuracy against cumulative uplink megabytes: what each accuracy point cost."""
    fig = new_figure(8, 4.5)
    ax = fig.add_subplot()
    for run, history in series.items():
        cumulative, total = [], 0
        for r in history:
            total += r.bytes_up
            cumulative.append(total / 1e6)
        for label, values in _curves(history, tier_labels[run]):
            ax.plot(cumulative, values, marker="o", markersize=3, label=label)
    ax.set_xlabel("cumulative uplink (MB, all clients)")
    ax.set_ylabel("global test accuracy")
    ax.set_title("accuracy against communication")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def history_rows(history: Sequence[RoundRecord]) -> list[dict[str, Any]]:
    """The per-round table of the summary (and of ``summary.json`` in MLflow)."""
    return [
        {
            "round": r.round,
            "test_accuracy": r.test_accuracy,
            "client_accuracy": None if math.isnan(r.client_accuracy) else r.client_accuracy,
            "sparsity": r.sparsity,
            "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down,
            "dense_bytes_up": r.dense_bytes_up,
            "client_flops": int(r.client_flops),
            "peak_client_bytes": r.peak_client_bytes,
            "replies": r.replies,
            "failures": r.failures,
            "errors": r.errors,
        }
        for r in history
    ]
