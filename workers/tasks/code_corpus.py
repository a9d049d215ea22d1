"""code-lm's corpus: a fixed list of pure-Python standard-library files, shipped as one archive.

The files come from CPython 3.11.7 and are shipped in ``weights/code-lm-corpus.tar.xz`` (with Python's
license, which allows redistributing them), not read from the running interpreter: most of them change
between 3.11 patch releases (3.11.2 and 3.11.7 differ in 16 of the 30, the test file among them), which
would change the training data, the calibration rows and the held-out windows, and so every figure.
``write_corpus`` rebuilds the archive from the running interpreter's standard library, for a maintainer
who changes the file lists (``scripts/train_builtins.py --corpus``).
"""

from __future__ import annotations

import io
import sysconfig
import tarfile
from functools import cache
from pathlib import Path

from prunehive.workers.tasks.shipped import WEIGHTS

CORPUS = WEIGHTS / "code-lm-corpus.tar.xz"
LICENSE = "LICENSE-Python.txt"  # the PSF license, kept beside the files it covers

TRAIN_FILES: tuple[str, ...] = (
    "argparse.py", "ast.py", "dataclasses.py", "enum.py", "functools.py",
    "inspect.py", "pathlib.py", "typing.py", "json/decoder.py", "json/encoder.py",
    "json/__init__.py", "collections/__init__.py", "logging/__init__.py", "abc.py", "contextlib.py",
    "copy.py", "fractions.py", "calendar.py", "string.py", "shlex.py",
    "queue.py", "tempfile.py", "shutil.py", "threading.py", "random.py",
)  # fmt: skip
# Several files, windows spread over each: a search's fitness from one file overfitted that file's style
# (a 2:4 metric search won on validation and lost on test).
VALIDATION_FILES: tuple[str, ...] = ("textwrap.py", "difflib.py", "heapq.py", "configparser.py")
TEST_FILES: tuple[str, ...] = ("gettext.py",)
ALL_FILES: tuple[str, ...] = TRAIN_FILES + VALIDATION_FILES + TEST_FILES


@cache
def _archive(path: Path) -> dict[str, bytes]:
    if not path.is_file():
        raise RuntimeError(f"code-lm's corpus {path} is missing; reinstall prunehive")
    with tarfile.open(path, "r:xz") as tar:
        out = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member) if member.isfile() else None
            if handle is not None:
                out[member.name] = handle.read()
        return out


def read_sources(files: tuple[str, ...]) -> list[bytes]:
    """Raw bytes of the named corpus files, from the shipped archive (the same on every machine)."""
    archive = _archive(CORPUS)
    missing = [name for name in files if name not in archive]
    if missing:
        raise RuntimeError(f"code-lm's corpus {CORPUS} has no {', '.join(missing)}")
    return [archive[name] for name in files]


def stdlib_sources(files: tuple[str, ...]) -> list[bytes]:
    """Raw bytes of the running interpreter's standard-library files; fails loudly when one is missing."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for name in files:
        path = root / name
        if not path.is_file():
            raise RuntimeError(f"code-lm needs the standard-library file {path}, which does not exist")
        out.append(path.read_bytes())
    return out


def write_corpus(path: Path = CORPUS) -> None:
    """The archive of ``ALL_FILES`` and Python's license from this interpreter, byte-for-byte repeatable:
    fixed order, times, owners and modes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    license_file = root / "LICENSE.txt"
    if not license_file.is_file():
        raise RuntimeError(f"{license_file} does not exist: the corpus must ship with Python's license")
    entries = [*zip(ALL_FILES, stdlib_sources(ALL_FILES), strict=True), (LICENSE, license_file.read_bytes())]
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:xz", preset=9, format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    _archive.cache_clear()
