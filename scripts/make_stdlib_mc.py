"""Write examples/lm_eval/stdlib_mc.jsonl: multiple-choice "how does this line end" questions over Python
standard-library files, for lm-eval's ``stdlib_mc`` task (examples/lm_eval/stdlib_mc.yaml).

Each question shows up to eight consecutive lines of a stdlib file and the start of the next code line, up
to its first ``(``, `` = ``, ``.`` or space, and offers four endings: the true one and the endings of three
other code lines (never docstring text or comments) of the same file, cut at the same character. So the
choices share the file's names and the cut's syntax, and only the context tells them apart. The files are
none of those the built-in ``code-lm`` trains, validates or tests on, so the task measures what a model
learnt about Python, not what it memorised. Deterministic for a given interpreter's standard library (the
committed file was made with CPython 3.11.7):

    .venv/bin/python scripts/make_stdlib_mc.py
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import tokenize
from io import StringIO
from pathlib import Path

from prunehive.workers.tasks.code_lm import TEST_FILES, TRAIN_FILES, VALIDATION_FILES

FILES = (
    "bisect.py", "cmd.py", "colorsys.py", "csv.py", "filecmp.py", "fnmatch.py", "getopt.py", "glob.py",
    "graphlib.py", "linecache.py", "mimetypes.py", "netrc.py", "numbers.py", "operator.py", "optparse.py",
    "pprint.py", "reprlib.py", "sched.py", "statistics.py", "tokenize.py",
)  # fmt: skip
PER_FILE = 8  # 20 files x 8 = 160 questions
CONTEXT_LINES = 8
CONTEXT_CHARS = 400  # a long context is cut at a line boundary; a model with a shorter window sees its tail
MIN_LINE = 16  # question lines have at least this many characters after their indentation
CUTS = ("(", " = ", ".", " ")  # where a line is cut into the shown start and the ending to choose
MIN_ENDING = 5
OUT = Path(__file__).resolve().parents[1] / "examples" / "lm_eval" / "stdlib_mc.jsonl"


def usable(line: str) -> bool:
    """A line worth asking about: some code, not a comment, a docstring's first line or a lone bracket."""
    body = line.strip()
    return len(body) >= MIN_LINE and not body.startswith(("#", '"""', "'''")) and body.isascii()


def string_rows(source: str) -> set[int]:
    """0-based indices of lines inside a multi-line string (docstrings): prose, not code."""
    rows: set[int] = set()
    for tok in tokenize.generate_tokens(StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.end[0] > tok.start[0]:
            rows.update(range(tok.start[0] - 1, tok.end[0]))
    return rows


def context_of(lines: list[str], i: int) -> str | None:
    """Up to CONTEXT_LINES lines before line ``i`` (at most CONTEXT_CHARS), ending in a newline; None
    where fewer than two of them hold anything (the first lines of a file)."""
    before = lines[max(0, i - CONTEXT_LINES) : i]
    while before and sum(len(x) + 1 for x in before) > CONTEXT_CHARS:
        before = before[1:]
    if sum(1 for x in before if x.strip()) < 2:
        return None
    return "".join(x + "\n" for x in before)


def cut(line: str) -> tuple[str, str, str] | None:
    """(start, ending, cut): the line split after its first CUTS character (tried in that order) that lies
    past the third character of its body and leaves an ending of at least MIN_ENDING characters."""
    body = line.lstrip()
    ind = len(line) - len(body)
    for c in CUTS:
        k = body.find(c, 3)
        if k != -1 and len(body) - (k + len(c)) >= MIN_ENDING:
            return line[: ind + k + len(c)], line[ind + k + len(c) :], c
    return None


def questions(name: str, source: str, rng: random.Random) -> list[dict[str, object]]:
    """PER_FILE questions from one file, at evenly spread lines with at least three same-cut endings."""
    lines = source.splitlines()
    prose = string_rows(source)
    splits = {i: cut(line) for i, line in enumerate(lines) if usable(line) and i not in prose}
    endings: dict[str, set[str]] = {}
    for split in splits.values():
        if split is not None:
            endings.setdefault(split[2], set()).add(split[1])
    candidates = []
    for i, split in splits.items():
        context = context_of(lines, i)
        if split is None or context is None:
            continue
        start, ending, c = split
        pool = sorted(endings[c] - {ending})
        if len(pool) >= 3:
            candidates.append((i, context + start, ending, pool))
    picked = [candidates[round(k * (len(candidates) - 1) / (PER_FILE - 1))] for k in range(PER_FILE)]
    out: list[dict[str, object]] = []
    for i, context, ending, pool in picked:
        choices = [ending, *rng.sample(pool, 3)]
        rng.shuffle(choices)
        out.append(
            {
                "id": f"{name}:{i + 1}",
                "context": context,
                "choices": [c + "\n" for c in choices],
                "answer": choices.index(ending),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overlap = set(FILES) & set(TRAIN_FILES + VALIDATION_FILES + TEST_FILES)
    if overlap:
        raise SystemExit(f"files code-lm already reads: {sorted(overlap)}")
    root = Path(sysconfig.get_paths()["stdlib"])
    rng = random.Random(args.seed)
    rows = [q for name in FILES for q in questions(name, (root / name).read_text(), rng)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} questions from {len(FILES)} files -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
