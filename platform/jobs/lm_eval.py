"""Zero-shot accuracy of an in-memory causal LM through lm-evaluation-harness (``lm_eval``), offline.

The model object is handed to lm-eval's ``HFLM`` in this process (no save and reload), so a pruned
candidate is scored exactly as prunehive built it. Tasks come from lm-eval's own registry or from YAMLs in
an include folder; nothing is downloaded (``HF_DATASETS_OFFLINE`` / ``HF_HUB_OFFLINE``): a task's data must
be local files (``dataset_path: json`` with ``data_files``, relative to the include folder) or already in
the Hugging Face datasets cache. lm-eval's logging, progress bars and per-request truncation warnings are
kept off stderr, so the CLI's own lines and ``--json`` stay readable.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
QUIET_LOGGERS = ("lm_eval", "lm-eval", "datasets", "evaluate", "transformers")
BOOTSTRAP_ITERS = 1000  # standard errors of non-mean metrics; lm-eval's default (100,000) takes minutes
FEWSHOT_SEED = 1234  # lm-eval's default: the same few-shot examples (where a task asks for some) every run


@dataclass(frozen=True)
class LMEvalOptions:
    """What to evaluate: task names, an optional folder of task YAMLs, examples per task, batch and device."""

    tasks: tuple[str, ...]
    include_path: Path | None = None
    limit: int | None = None
    batch_size: int = 8
    device: str | None = None  # None: the first GPU where there is one, else the CPU

    @classmethod
    def parse(
        cls, tasks: str | list[str], include_path: str | Path | None = None, limit: int | None = None, **kw: Any
    ) -> LMEvalOptions:
        """From a comma-separated ``--lm-eval`` value (or a list); errors name the option."""
        names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
        if not names or any(not t for t in names):
            raise ValueError(f"--lm-eval: expected comma-separated lm-eval task names, got {tasks!r}")
        folder = None
        if include_path is not None:
            folder = Path(include_path).expanduser().resolve()
            if not folder.is_dir():
                raise ValueError(f"--include-path: {str(folder)!r} is not a folder of lm-eval task YAMLs")
        if limit is not None and limit < 1:
            raise ValueError(f"--limit: expected a positive number of examples, got {limit}")
        return cls(tuple(dict.fromkeys(names)), folder, limit, **kw)


def go_offline() -> None:
    """Forbid downloads for the rest of this process: ``datasets`` reads the variable once, at import, so a
    ``datasets`` imported earlier is told directly."""
    os.environ.update(OFFLINE)
    config = sys.modules.get("datasets.config")
    if config is not None:
        config.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """lm-eval's INFO lines, truncation warnings and progress bars (which it writes to ``sys.stderr``
    whatever tqdm's settings say) kept off the terminal while it runs; errors still raise."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def task_manager(options: LMEvalOptions) -> Any:
    """lm-eval's task index: only the include folder when it defines every named task (indexing lm-eval's
    own ~15,000 task files takes tens of seconds), with lm-eval's own tasks otherwise. Unknown names fail
    here, in one line."""
    go_offline()
    with quiet():
        from lm_eval.tasks import TaskManager  # local: keeps lm_eval out of CLI start-up

        if options.include_path is not None:
            manager = TaskManager(include_path=str(options.include_path), include_defaults=False)
            if all(name in manager.all_tasks for name in options.tasks):
                return manager
        manager = TaskManager(include_path=str(options.include_path) if options.include_path else None)
    unknown = [name for name in options.tasks if name not in manager.all_tasks]
    if unknown:
        where = f"in {options.include_path} or " if options.include_path else ""
        raise ValueError(f"--lm-eval: no lm-eval task {', '.join(map(repr, unknown))} ({where}among lm-eval's own)")
    return manager


def load_tasks(options: LMEvalOptions, manager: Any | None = None) -> dict[str, Any]:
    """The named tasks with their data, read with the include folder as working directory (so relative
    ``data_files`` resolve against it); zero-shot unless a task's YAML sets ``num_fewshot``."""
    manager = manager or task_manager(options)
    folder = options.include_path or Path.cwd()
    try:
        with quiet(), contextlib.chdir(folder):
            loaded: dict[str, Any] = manager.load(list(options.tasks))
    except Exception as exc:  # a missing data file, a dataset not in the local cache, a bad YAML
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--lm-eval: cannot load {', '.join(options.tasks)}: {message}") from None
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return loaded


def default_device() -> str:
    import torch  # local: keeps torch out of CLI start-up

    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_model(model: Any, tokenizer: Any, options: LMEvalOptions, tasks: dict[str, Any] | None = None) -> Any:
    """``{task: {metric: value}}`` for an in-memory Hugging Face causal LM (``tasks``: from ``load_tasks``;
    loaded afresh when not given, since lm-eval keeps each run's requests on its task objects)."""
    go_offline()
    import lm_eval  # local: keeps lm_eval out of CLI start-up
    from lm_eval.models.huggingface import HFLM  # local: keeps lm_eval out of CLI start-up

    tasks = tasks if tasks is not None else load_tasks(options)
    device = options.device or default_device()
    model = model.to(device).eval()
    with quiet():
        lm = HFLM(
            pretrained=model,
            tokenizer=tokenizer,
            batch_size=options.batch_size,
            device=device,
            prefix_token_id=prefix_token(tokenizer),
        )
        out = lm_eval.evaluate(
            lm=lm, task_dict=tasks, limit=options.limit, bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False
        )
    return scores(out["results"])


def prefix_token(tokenizer: Any) -> int | None:
    """lm-eval starts an empty context with BOS (else EOS); a tokenizer with neither (code-lm's bytes) gets
    a newline's token, the start of a line of code."""
    if tokenizer.bos_token_id is not None or tokenizer.eos_token_id is not None:
        return None
    ids = tokenizer.encode("\n", add_special_tokens=False)
    return int(ids[0]) if ids else 0


def scores(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """lm-eval's ``{"acc,none": 0.41, "alias": ...}`` per task as ``{"acc": 0.41}`` (a filter other than
    ``none`` is kept as a suffix: ``exact_match_strict-match``); texts and N/A entries are dropped."""
    out: dict[str, dict[str, float]] = {}
    for task, values in results.items():
        metrics = {}
        for key, value in values.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            metric, _, filt = key.partition(",")
            if not math.isfinite(float(value)):
                continue
            metrics[metric if filt == "none" else f"{metric}_{filt}"] = float(value)
        out[task] = metrics
    return out


def mlflow_metrics(results: dict[str, dict[str, float]], prefix: str = "") -> dict[str, float]:
    """``lm_eval_<task>_<metric>`` (after ``prefix``) for each score, in characters MLflow accepts."""
    return {
        prefix + re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", f"lm_eval_{task}_{metric}"): value
        for task, metrics in results.items()
        for metric, value in metrics.items()
    }


def summary_lines(entry: dict[str, Any] | None) -> list[str]:
    """A search summary's ``lm_eval`` for people: per task, each score of the best candidate and the dense
    model (standard errors left to ``--json``)."""
    if not entry:
        return []
    if "error" in entry:
        return [f"lm-eval: no scores ({entry['error']})"]
    best, dense = entry.get("best", {}), entry.get("dense", {})
    lines = []
    for task, metrics in best.items():
        shown = [
            f"{m} {v:.4f} (dense {dense.get(task, {}).get(m, float('nan')):.4f})"
            for m, v in metrics.items()
            if "stderr" not in m
        ]
        lines.append(f"lm-eval {task}: {', '.join(shown)}")
    return lines
