"""What a driver checks before it runs a job: the task can be built, its files can be read, and a worker
can ever be placed.

``prunehive run SPEC`` checks before the job row exists, so a spec that can never run leaves no
job behind; a resumed job (the service's drivers) fails with the same one line. Both errors are
ValueErrors: the CLI prints one line and exits 2.
"""

from __future__ import annotations

from prunehive.platform.jobs.cluster import Demand, connect_ray, require
from prunehive.platform.spec.job import JobSpec
from prunehive.workers.tasks import load_task


def preflight(spec: JobSpec, ray_address: str | None = None) -> None:
    """Build the task (lazy: nothing is trained or loaded until ``model()``), check its files (every
    data split has a window of text or only readable images in class folders the model knows), connect
    to Ray, and raise ``PlacementError`` when no node of a cluster that cannot grow could hold one worker."""
    load_task(spec.task, seed=spec.seed).check_inputs()
    if spec.evaluation is not None and spec.evaluation.lm_eval is not None:
        # local: keeps torch out of spec checking unless the spec asks for lm-eval
        from prunehive.platform.jobs.zero_shot import check_final_evaluation

        check_final_evaluation(spec)  # lm-eval task names and a causal LM, before the search spends its budget
    connect_ray(ray_address)
    require(Demand.of(spec.resources))
