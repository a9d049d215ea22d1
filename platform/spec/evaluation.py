"""``evaluation: {lm_eval: {tasks: [...], include_path: DIR, limit: N}}``: a search's final zero-shot
evaluation with lm-evaluation-harness, of the best candidate and of the dense model.

Checked when the spec is read, so a job that would fail only after its whole search never starts: the
task list is non-empty, the include path is an existing folder, and the job's task is a causal language
model. A relative include path in a spec file is relative to the file's folder, as the task's paths are.
No torch or lm-eval import here (the API server validates specs without them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from prunehive.platform.spec.fields import Strict
from prunehive.workers.tasks.spec import HFTaskSpec

if TYPE_CHECKING:
    from prunehive.platform.spec.job import JobSpec

EVALUATED_KINDS = ("search", "metric-search")
LM_BUILTINS = ("code-lm", "code-lm-deep")  # built-in tasks whose model is a causal language model


class LMEvalSpec(Strict):
    tasks: list[str] = Field(
        ..., min_length=1, description="lm-eval task names, e.g. [stdlib_mc] with include_path: examples/lm_eval."
    )
    include_path: Path | None = Field(
        None, description="A folder of lm-eval task YAMLs (their data as local files: nothing is downloaded)."
    )
    limit: int | None = Field(None, ge=1, description="Examples per task (all when unset).")

    @field_validator("tasks")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        names = [t.strip() for t in v]
        if any(not t for t in names):
            raise ValueError("an empty task name")
        return names

    @field_validator("include_path")
    @classmethod
    def _folder(cls, v: Path | None) -> Path | None:
        if v is None:
            return None
        path = v.expanduser().resolve()
        if not path.is_dir():
            raise ValueError(f"{str(path)!r} is not a folder of lm-eval task YAMLs")
        return path


class EvaluationSpec(Strict):
    lm_eval: LMEvalSpec | None = None


def resolve_evaluation_paths(section: Any, base: Path) -> Any:
    """An ``evaluation:`` section read from a spec file, with a relative ``lm_eval.include_path`` joined to
    the file's folder ``base`` (as the task's paths are); anything else comes back as it is."""
    if not isinstance(section, dict) or not isinstance(section.get("lm_eval"), dict):
        return section
    lm_eval = dict(section["lm_eval"])
    raw = lm_eval.get("include_path")
    if isinstance(raw, str) and not Path(raw).expanduser().is_absolute():
        lm_eval["include_path"] = str(base / raw)
    return {**section, "lm_eval": lm_eval}


def check_evaluation(spec: JobSpec) -> None:
    """A final evaluation needs a job with a best candidate and a causal language model to evaluate."""
    if spec.evaluation is None or spec.evaluation.lm_eval is None:
        return
    if spec.kind not in EVALUATED_KINDS:
        raise ValueError(f"evaluation: a {spec.kind} job has no final evaluation (search and metric-search do)")
    task = spec.task
    # a module:factory task may build any model: it is checked when the job ends
    causal = task.kind == "causal-lm" if isinstance(task, HFTaskSpec) else (task in LM_BUILTINS or ":" in task)
    if not causal:
        raise ValueError(
            f"evaluation.lm_eval: needs a causal language model task (code-lm or an hf: causal LM), not {task}"
        )
