"""Text splits for causal language models: files read lazily, tokenized, concatenated, cut into windows.

A split is a text file or a directory of them (read in sorted order, hidden files skipped). Files are
read in chunks of lines and tokenized as they come, so a split of any size streams; ``max_tokens``
stops reading once that many tokens are scored. A window holds ``seq_len + 1`` tokens: the inputs and
the targets shifted by one. Consecutive windows share one token, so every token after the first is
scored exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from prunehive.workers.tasks.base import Batch, TaskError

CHUNK_CHARS = 1 << 20  # tokenize about a megabyte of text at a time


def text_files(path: Path, what: str = "") -> list[Path]:
    """The file itself, or every non-hidden file under a directory, sorted."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts))
    if not files:
        prefix = f"{what}: " if what else ""
        raise TaskError(f"{prefix}{str(path)!r} holds no text files")
    return files


def _chunks(path: Path, chunk_chars: int = CHUNK_CHARS) -> Iterator[str]:
    """The file's text in pieces of about ``chunk_chars`` characters, cut after a newline."""
    with open(path, encoding="utf-8", errors="replace") as f:
        piece: list[str] = []
        size = 0
        for line in f:
            piece.append(line)
            size += len(line)
            if size >= chunk_chars:
                yield "".join(piece)
                piece, size = [], 0
        if piece:
            yield "".join(piece)


def token_ids(files: list[Path], tokenizer: Any, chunk_chars: int = CHUNK_CHARS) -> Iterator[list[int]]:
    """Token ids of the files in order, one chunk at a time, with the end-of-text token between files."""
    eos = tokenizer.eos_token_id
    for path in files:
        for text in _chunks(path, chunk_chars):
            yield tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            yield [eos]


def windows(chunks: Iterator[list[int]], seq_len: int, max_tokens: int | None) -> Iterator[torch.Tensor]:
    """Rows of ``seq_len + 1`` tokens, each starting at the previous row's last token, until
    ``max_tokens`` tokens are scored (at least one row)."""
    limit = None if max_tokens is None else max(1, max_tokens // seq_len)
    buffer: list[int] = []
    made = 0
    for ids in chunks:
        buffer.extend(ids)
        while len(buffer) > seq_len:
            yield torch.tensor(buffer[: seq_len + 1], dtype=torch.int64)
            del buffer[:seq_len]
            made += 1
            if limit is not None and made >= limit:
                return


def text_batches(
    path: Path, tokenizer: Any, seq_len: int, max_tokens: int | None, rows: int, what: str
) -> Iterator[Batch]:
    """(inputs, targets) batches of ``rows`` windows; an error naming the split if it is too short."""
    stream = windows(token_ids(text_files(path, what), tokenizer), seq_len, max_tokens)
    pending: list[torch.Tensor] = []
    count = 0
    for row in stream:
        pending.append(row)
        count += 1
        if len(pending) == rows:
            yield _pair(pending)
            pending = []
    if pending:
        yield _pair(pending)
    if count == 0:
        raise _too_short(path, seq_len, what)


def _too_short(path: Path, seq_len: int, what: str) -> TaskError:
    return TaskError(f"{what}: {str(path)!r} has fewer than seq_len + 1 = {seq_len + 1} tokens")


def check_text_split(path: Path, tokenizer: Any, seq_len: int, what: str) -> None:
    """The split holds at least one window: tokenizes only until one is found, in small pieces, so a
    driver checks a split of any size in milliseconds before a job starts."""
    pieces = token_ids(text_files(path, what), tokenizer, chunk_chars=max(4096, 8 * (seq_len + 1)))
    if next(windows(pieces, seq_len, None), None) is None:
        raise _too_short(path, seq_len, what)


def _pair(rows: list[torch.Tensor]) -> Batch:
    block = torch.stack(rows)
    return block[:, :-1].contiguous(), block[:, 1:].contiguous()
