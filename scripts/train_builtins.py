"""Train the built-in tasks' seed-0 models deterministically and ship them under workers/tasks/weights/.

Each model is trained from its recipe (one thread, deterministic algorithms), written as the package
ships it (a safetensors file, or code-lm's save_pretrained directory), read back, and recorded in
weights/manifest.json with its recipe fingerprint, a hash of its tensors and the versions that trained it.
With --check nothing is written: the models are trained again in a temporary folder and their hashes
compared with the manifest (exit 1 if any differs), which shows whether this machine reproduces them.

    .venv/bin/python scripts/train_builtins.py                     # all built-ins (code-lm: ~15 min, code-lm-deep: ~7)
    .venv/bin/python scripts/train_builtins.py --task digits-mlp --check
    .venv/bin/python scripts/train_builtins.py --corpus --task code-lm   # after changing code-lm's files
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import load_file

from prunehive.workers.tasks import BUILTINS, load_task
from prunehive.workers.tasks.code_corpus import ALL_FILES, CORPUS, read_sources, write_corpus
from prunehive.workers.tasks.hf_load import load_causal_lm
from prunehive.workers.tasks.shipped import MANIFEST, WEIGHTS, manifest, state_hash, train_fresh

TARGETS = {
    "digits-mlp": "digits-mlp.safetensors",
    "digits-cnn": "digits-cnn.safetensors",
    "code-lm": "code-lm",
    "code-lm-deep": "code-lm-deep",
}
DIRECTORIES = ("code-lm", "code-lm-deep")  # shipped as save_pretrained directories


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def read_back(name: str, path: Path) -> dict[str, torch.Tensor]:
    """The tensors as a user's process will load them from ``path``."""
    if name in DIRECTORIES:
        return load_causal_lm(path).state_dict()

    return load_file(path)


def train(name: str, dest: Path) -> dict[str, Any]:
    """Train ``name`` (seed 0), write it to ``dest``, and describe it for the manifest."""
    task = load_task(name, seed=0)
    start = time.perf_counter()
    model = train_fresh(task)
    seconds = time.perf_counter() - start
    if dest.is_dir():
        shutil.rmtree(dest)  # no stale files from an earlier save
    task.save_weights(model, dest)  # type: ignore[attr-defined]
    entry = {
        "fingerprint": task.fingerprint(),
        "path": TARGETS[name],
        "sha256": state_hash(read_back(name, dest)),
        "trained_with": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": platform.machine(),
            "seconds": round(seconds, 1),
        },
    }
    log(f"{name}: trained in {seconds:.0f} s, sha256 {entry['sha256'][:16]}")
    return entry


def corpus_entry() -> dict[str, Any]:
    """Which files code-lm's archive holds, with a hash of each, for the tests to check."""
    sources = zip(ALL_FILES, read_sources(ALL_FILES), strict=True)
    files = {name: hashlib.sha256(src).hexdigest() for name, src in sources}
    return {"path": CORPUS.name, "python": platform.python_version(), "files": files}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", action="append", choices=sorted(TARGETS), help="Only this task (repeatable).")
    parser.add_argument("--check", action="store_true", help="Retrain in a temporary folder and compare hashes.")
    parser.add_argument("--corpus", action="store_true", help="First rebuild code-lm's corpus from this stdlib.")
    args = parser.parse_args()
    names = args.task or [n for n in BUILTINS if n in TARGETS]
    if args.check:
        differ = []
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                entry = train(name, Path(tmp) / TARGETS[name])
                recorded = manifest().get(name, {})
                same = entry["sha256"] == recorded.get("sha256") and entry["fingerprint"] == recorded.get("fingerprint")
                print(f"{name}: {'same as shipped' if same else 'DIFFERS from shipped'}")
                if not same:
                    differ.append(name)
        return 1 if differ else 0
    WEIGHTS.mkdir(exist_ok=True)
    if args.corpus:
        write_corpus()
    data = dict(manifest())
    data["code-lm-corpus"] = corpus_entry()
    for name in names:
        data[name] = train(name, WEIGHTS / TARGETS[name])
        MANIFEST.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    MANIFEST.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
