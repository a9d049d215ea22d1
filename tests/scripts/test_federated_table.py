"""``scripts/federated_table.py``'s verdict against ``fixed``: higher accuracy, or lower cost to reach the accuracy
both runs reached (from each run's per-round curve)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from script_module import load_script


@pytest.fixture(scope="module")
def table() -> ModuleType:
    return load_script("federated_table")


def run(curve: list[tuple[float, float]], per_round_down: float = 1e6) -> dict[str, Any]:
    """A run's row: (accuracy, uplink bytes) per round; downlink and FLOPs the same every round."""
    rows, up = [], 0.0
    for i, (acc, sent) in enumerate(curve, 1):
        up += sent
        rows.append([acc, up, per_round_down * i, 1e9 * i])
    last = rows[-1]
    return {"accuracy": last[0], "bytes_up": last[1], "bytes_down": last[2], "client_flops": last[3],
            "peak_client_bytes": 1e6, "curve": rows}  # fmt: skip


def test_a_cheaper_plan_is_judged_on_what_it_spent_to_reach_the_accuracy_both_reached(table: ModuleType) -> None:
    # fixed reaches 0.6 in round 2 (2 MB up); the plan, sending a tenth as much a round, in round 4 (0.4 MB)
    fixed = {s: run([(0.3, 1e6), (0.6, 1e6), (0.8, 1e6), (0.9, 1e6)]) for s in (0, 1)}
    cheap = {s: run([(0.2, 1e5), (0.4, 1e5), (0.5, 1e5), (0.6, 1e5)]) for s in (0, 1)}
    said = table.verdict(cheap, fixed)
    assert said.startswith("yes: accuracy -30.0 pt; lower cost") and "bytes up 0.40 vs 2.00 M" in said
    assert "bytes down" not in said  # 4 rounds of downlink against fixed's 2
    slow = {s: run([(0.2, 1e6), (0.4, 1e6), (0.5, 1e6), (0.6, 1e6)]) for s in (0, 1)}
    assert table.verdict(slow, fixed).startswith("no: accuracy -30.0 pt; no lower cost")
    better = {s: run([(0.5, 1e6), (0.9, 1e6), (0.95, 1e6), (0.97, 1e6)]) for s in (0, 1)}
    assert table.verdict(better, fixed) == "yes: accuracy +7.0 pt (every seed)"
    with pytest.raises(ValueError, match="never reached"):
        table.spent_to_reach(fixed[0], 0.95)
