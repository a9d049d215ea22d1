"""Each named plan end to end on a real Flower simulation (local Ray): two clients, two rounds."""

from __future__ import annotations

import pytest

from prunehive.workers.federated.plans import NAMED_PLANS
from prunehive.workers.federated.simulation import SimulationSettings, simulate
from prunehive.workers.federated.strategy import RoundRecord

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("plan", NAMED_PLANS)
def test_named_plan_runs_end_to_end(plan: str) -> None:
    settings = SimulationSettings(
        task="digits-cnn-bn",
        plan=plan,
        targets=[0.9],
        clients=2,
        rounds=2,
        local_epochs=1,
        partition_kind="dirichlet",
        partition_value=0.5,
        mask_interval=1 if plan in ("fedtiny", "feddst", "prunefl") else None,  # re-adjust in round 2
        calibration_batches=2,
    )
    seen: list[RoundRecord] = []
    result = simulate(settings, seen.append)
    assert [r.round for r in seen] == [1, 2] and all(r.failures == 0 and r.replies == 2 for r in seen)
    last = seen[-1]
    assert last.sparsity == [pytest.approx(0.9, abs=2e-3)]  # exact (up to per-layer rounding) at the end
    assert 0.0 <= last.test_accuracy[0] <= 1.0
    assert last.client_flops > 0 and last.peak_client_bytes > 0  # clients measured their training
    totals = result.totals()
    assert 0 < totals["bytes_up"] < totals["dense_bytes_up"]  # sparse (or sign) uplink
    if plan == "hidenseek":  # one bit per kept weight plus the small dense tensors
        assert totals["bytes_up"] < 0.1 * totals["dense_bytes_up"]
