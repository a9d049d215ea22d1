"""What the long-running commands do on SIGTERM (``timeout``, systemd, Kubernetes, Ray's job stop).

``prunehive run`` treats it as Ctrl-C: the job ends ``cancelled`` and can be resumed.
``prunehive ui`` stops its whole process group (``mlflow server`` and its web workers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import NoReturn

import psutil
import typer

LINGER_SECONDS = 5.0  # how long a cancelled run waits for its library threads before leaving anyway


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be: the drivers' ``ending()`` marks the job cancelled."""


def cancel_on_sigterm() -> None:
    """The first SIGTERM raises ``Terminated`` in the main thread; later ones wait for that to finish."""
    state = {"seen": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        if state["seen"]:
            return
        state["seen"] = True
        raise Terminated(f"terminated by signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal, as shells report it: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


def leave(code: int) -> NoReturn:
    """Exit with ``code`` even when a library left non-daemon threads running (Flower's server
    thread after an interrupted simulation): they get ``LINGER_SECONDS`` to finish."""
    deadline = time.monotonic() + LINGER_SECONDS
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() and not t.daemon and t is not threading.current_thread() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


def stop_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM to a process group; SIGKILL to whatever of it is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (zombies, already dead, don't count)."""
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):  # gone meanwhile
            continue
    return False


def run_as_group(cmd: list[str]) -> int:
    """Run ``cmd`` in its own process group and stop that whole group when this process is told
    to stop (SIGTERM, SIGINT, SIGHUP) or fails; returns the command's exit code, or 128 + the signal."""
    proc = subprocess.Popen(cmd, start_new_session=True)
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        stop_group(proc.pid)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)
    try:
        code = proc.wait()
    finally:
        stop_group(proc.pid)
    return 128 + received[0] if received else code
