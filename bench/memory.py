"""``memory``: what an evaluation worker holds beyond its model (goal: ``extra_over_model`` <= 1.0).

Each configuration is measured in fresh subprocesses, so that no peak carries over from another: one
loads the task's model alone (its resident set is the baseline), one builds an ``EvalWorker`` and
evaluates one candidate (its peak resident set). Both import the same modules first, so libraries
count on both sides. ``bare_eval_extra_bytes`` is what one plain evaluation of the dense model adds
to the model alone (activations, the split's data): a small model's worker cannot go below it.

The models are code-lm (trained and cached) and a Hugging Face Llama of about 100M parameters built
from a config with random weights (memory does not depend on the values), read as a ``task: {hf: DIR,
data: ...}`` mapping with a few short text windows so that its run stays short.
"""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from prunehive.workers.actor import EvalWorker
from prunehive.workers.contracts import EvalRequest
from prunehive.workers.tasks import load_task
from prunehive.workers.tasks.code_lm import byte_tokenizer

MEMORY_TASKS = ("code-lm", "llama-100m")
MEMORY_METRICS = ("magnitude", "wanda")
GOAL = 1.0
# 8 blocks of hidden size 1024 (SwiGLU 2816): 103M parameters, nearly all in the pruned Linear layers.
LLAMA_CONFIG: dict[str, Any] = {
    "vocab_size": 256,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
WORDS = ("the", "model", "prunes", "a", "sparse", "layer", "of", "weights", "and", "keeps", "its", "quality")


def _status(field: str) -> int:
    """A size from /proc/self/status (VmRSS: resident now, VmHWM: the peak), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} (the memory suite needs Linux)")


def probe(task: str, metric: str | None, sparsity: float = 0.5) -> dict[str, int]:
    """In this (fresh) process: the model alone (``metric`` None) or a built worker and one candidate."""
    torch.set_num_threads(1)
    if metric is None:
        task_ = load_task(task)
        model = task_.model()
        with torch.no_grad():  # read every weight: a lazily mapped file is resident only once read
            for t in [*model.parameters(), *model.buffers()]:
                t.sum()
        gc.collect()
        size = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        rss = _status("VmRSS")
        task_.evaluate(model, "validation")  # what any evaluation needs: activations, the split's data
        return {"model_bytes": size, "rss_bytes": rss, "bare_eval_peak_bytes": _status("VmHWM")}
    worker = EvalWorker(task, metric=metric, threads=1)
    reply = worker.evaluate_batch([EvalRequest(0, [sparsity] * len(worker.engine.names))])[0]
    if reply.error:
        raise RuntimeError(f"{task} {metric}: {reply.error}")
    return {"peak_bytes": _status("VmHWM")}


def _run_probe(task: str, metric: str | None) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-m", "prunehive.bench.memory", json.dumps([task, metric])],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory probe for {task} ({metric or 'model alone'}) failed: {tail[0]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def write_llama(root: Path) -> str:
    """A ~100M-parameter Llama directory (byte tokenizer) and short text files; the task mapping as JSON."""
    # local: keeps transformers out of the probe processes, whose memory is measured
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA_CONFIG))
    model.save_pretrained(root / "llama-100m")
    byte_tokenizer().save_pretrained(root / "llama-100m")
    del model
    rng = random.Random(0)
    data = {}
    for split in ("calibration", "validation", "test"):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400))
        (root / f"{split}.txt").write_text(text + "\n")
        data[split] = str(root / f"{split}.txt")
    tokens = {split: 1024 for split in data}  # one batch of 16 windows of 64 tokens per split
    mapping = {"hf": str(root / "llama-100m"), "data": data, "seq_len": 64, "max_tokens": tokens}
    return json.dumps(mapping)


def measure(task: str, label: str, metrics: tuple[str, ...] = MEMORY_METRICS) -> list[dict[str, Any]]:
    alone = _run_probe(task, None)
    rows = []
    for metric in metrics:
        peak = _run_probe(task, metric)["peak_bytes"]
        extra = peak - alone["rss_bytes"]
        rows.append(
            {
                "task": label,
                "metric": metric,
                "model_bytes": alone["model_bytes"],
                "model_rss_bytes": alone["rss_bytes"],
                "worker_peak_bytes": peak,
                "worker_extra_bytes": extra,
                "bare_eval_extra_bytes": alone["bare_eval_peak_bytes"] - alone["rss_bytes"],
                "extra_over_model": extra / alone["model_bytes"],
                "goal": GOAL,
            }
        )
    return rows


def memory_suite(tasks: list[str] | None = None) -> dict[str, Any]:
    """The table of ``prunehive bench --suite memory``: every task x metric, in its own subprocesses."""
    rows: list[dict[str, Any]] = []
    for name in tasks or MEMORY_TASKS:
        if name != "llama-100m":
            rows += measure(name, name)
            continue
        with tempfile.TemporaryDirectory(prefix="prunehive-memory-") as tmp:
            rows += measure(write_llama(Path(tmp)), name)
    return {"suite": "memory", "tasks": rows, "goal": GOAL}


if __name__ == "__main__":  # one probe, in the fresh process ``_run_probe`` starts
    print(json.dumps(probe(*json.loads(sys.argv[1]))))
