"""The job spec: one YAML schema, validated by pydantic, with defaults for everything but ``kind``.

Errors name the field and the allowed values, e.g.
``search.strategy: 'evolve' is not one of evolution, nsga2, bayesian, rl, random``. The kinds, their
own sections and their cross-field rules come from the kinds' table (``spec/kinds.py``).
Nothing here imports torch: the API server validates specs without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from prunehive.platform.spec.benchmark import BenchmarkOptions
from prunehive.platform.spec.evaluation import EvaluationSpec, check_evaluation, resolve_evaluation_paths
from prunehive.platform.spec.federated import FederatedOptions
from prunehive.platform.spec.fields import SpecError as SpecError  # re-exported: callers catch it from here
from prunehive.platform.spec.fields import Strict
from prunehive.platform.spec.kinds import KIND_RULES
from prunehive.platform.spec.pruning import PruningSpec
from prunehive.platform.spec.search import SearchOptions
from prunehive.workers.tasks.spec import HFTaskSpec, parse_task_mapping, resolve_task_paths, use_spec_directory


class Resources(Strict):
    workers: int = Field(2, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(0.0, ge=0)
    batch: int = Field(0, ge=0, description="Candidates per actor call; 0 picks one from the evaluation time.")
    placement_timeout: float = Field(
        300.0, gt=0, description="Seconds to wait for every worker to be placed before the job fails."
    )


class Tracking(Strict):
    mlflow_uri: str | None = None
    experiment: str | None = None


def _kinds_text() -> str:
    """The kinds as pydantic words a Literal's error: 'a', 'b' or 'c'."""
    names = [repr(k) for k in KIND_RULES]
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


class JobSpec(Strict):
    kind: str = Field("search", json_schema_extra={"enum": list(KIND_RULES)})
    name: str | None = None
    task: str | HFTaskSpec = Field(
        "digits-mlp", description="A built-in name, package.module:factory, or {hf: DIR, data: {...}, ...}."
    )
    seed: int = 0
    pruning: PruningSpec = Field(default_factory=lambda: PruningSpec())
    search: SearchOptions = Field(default_factory=lambda: SearchOptions())
    resources: Resources = Field(default_factory=lambda: Resources())
    tracking: Tracking = Field(default_factory=Tracking)
    # The kinds' own sections (each also named in its line of spec/kinds.py).
    federated: FederatedOptions = Field(default_factory=lambda: FederatedOptions())
    benchmark: BenchmarkOptions = Field(default_factory=lambda: BenchmarkOptions())
    evaluation: EvaluationSpec | None = Field(
        None, description="A final evaluation of the best candidate and the dense model: {lm_eval: {tasks: [...]}}."
    )

    @field_validator("task", mode="before")
    @classmethod
    def _task(cls, v: Any) -> Any:
        """A mapping becomes the typed ``hf:`` task; its errors name the inner field (``task: data.test: ...``)."""
        return parse_task_mapping(v) if isinstance(v, dict) else v

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in KIND_RULES:
            raise ValueError(f"{v!r} input should be {_kinds_text()}")
        return v

    @model_validator(mode="after")
    def _kind_rules(self) -> JobSpec:
        for check in KIND_RULES[self.kind].checks:
            check(self)
        check_evaluation(self)
        return self

    @property
    def strategy(self) -> str:
        return self.search.strategy or "evolution"

    @property
    def display_name(self) -> str:
        return self.name or KIND_RULES[self.kind].default_name(self)

    @property
    def task_ref(self) -> str:
        """The task as one string: its name, or an ``hf:`` mapping as JSON text (``load_task`` takes both);
        for summaries and configs that carry scalars only (Flower's ConfigRecord)."""
        if isinstance(self.task, str):
            return self.task
        return json.dumps(self.task.model_dump(mode="json"), sort_keys=True)

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.display_name


def _format(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "spec"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    elif first["type"] == "literal_error":
        msg = f"{first.get('input')!r} {msg.lower()}"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {msg}{more}"


def parse_spec(data: Any) -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError("spec: expected a mapping of fields (kind, task, pruning, search, ...)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format(exc)) from None


def load_spec(path: str | Path) -> JobSpec:
    """Read and validate a YAML (or JSON) spec file; relative task paths are relative to its folder."""
    p = Path(path)
    if not p.exists():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if isinstance(data, dict) and "task" in data:
        data = {**data, "task": resolve_task_paths(data["task"], p.absolute().parent)}
    if isinstance(data, dict) and "evaluation" in data:
        data = {**data, "evaluation": resolve_evaluation_paths(data["evaluation"], p.absolute().parent)}
    spec = parse_spec(data)
    use_spec_directory(spec.task, p.parent)  # a module:factory task may sit next to its spec
    return spec
