"""The rules of ``search.evaluation: federated``: a search whose candidates are scored on Flower clients.

Clients report accuracy and example counts, and the server holds no data: so the task must be a
classifier, and nothing may need central data (KL fitness needs the dense model's outputs on central
validation rows, a level solver reconstructs weights from central Hessians, ``pruning.recovery_steps``
fine-tunes on central rows; ``federated.recovery_rounds`` is the federated fine-tune).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunehive.platform.spec.evaluation import LM_BUILTINS
from prunehive.platform.spec.federated import PERPLEXITY_TASKS
from prunehive.workers.tasks.spec import HFTaskSpec

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec

FEDERATED_SEARCH_KINDS = ("search", "metric-search")
LM_PREFIX = "code-lm"  # the built-in causal language models (code-lm and its deeper variants)


def not_a_classifier(task: str | HFTaskSpec) -> str | None:
    """Why ``task`` is known, before it loads, not to be a classifier (None: a classifier, or a user's
    factory, which its workers check when they load it)."""
    if isinstance(task, HFTaskSpec):
        if task.kind != "image-classification":
            return f"hf: {task.label} is a causal language model (perplexity)"
        return None
    if task in PERPLEXITY_TASKS or task in LM_BUILTINS or task.startswith(LM_PREFIX):
        return f"{task} reports perplexity"
    return None


def check_federated_evaluation(spec: JobSpec) -> None:
    """Cross-field checks of ``search.evaluation: federated``; raises ValueError naming the field."""
    if spec.search.evaluation != "federated":
        return
    if spec.kind not in FEDERATED_SEARCH_KINDS:
        raise ValueError(f"search.evaluation: federated is for kind search and metric-search, not {spec.kind}")
    why = not_a_classifier(spec.task)
    if why is not None:
        raise ValueError(f"search.evaluation: federated needs a classification task (clients report accuracy); {why}")
    if spec.search.fitness == "kl":
        raise ValueError(
            "search.fitness: kl compares with the dense model on central data; federated scores quality or loss"
        )
    if spec.pruning.solver != "mask":
        raise ValueError(
            f"pruning.solver: {spec.pruning.solver} reconstructs weights from central calibration data;"
            " federated evaluation takes solver mask"
        )
    if spec.pruning.recovery_steps:
        raise ValueError("pruning.recovery_steps: fine-tunes on central data; use federated.recovery_rounds")
    fed = spec.federated
    if round(fed.clients * fed.eval_fraction) < 1:
        raise ValueError(f"federated.eval_fraction: {fed.eval_fraction} of {fed.clients} clients scores on no client")
