"""The parent watch: a stage started by `dvc` stops when dvc dies (a CI runner killed it, a terminal closed).

Two mechanisms, since either alone misses cases: PR_SET_PDEATHSIG (Linux) sends SIGTERM when the direct
parent exits, and a thread polls the parent and, when a shell started us (DVC runs a stage's cmd through
$SHELL or /bin/sh, and dash does not exec it), the shell's parent. A zombie (dead, not yet reaped: a killed
`dvc` whose own parent has not waited for it yet) counts as gone; a recycled pid is told apart by its start
time. Process facts come from psutil.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import psutil

from inspection import interrupts
from inspection.errors import write_stderr

SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "fish"}


def _identity(proc: psutil.Process) -> float | None:
    """The process's start time, None when it is gone or a zombie."""
    try:
        if proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return None
        return proc.create_time()
    except psutil.NoSuchProcess:
        return None
    except psutil.Error:  # not ours to inspect: assume it is alive
        return -1.0


def launcher(pid: int | None = None) -> psutil.Process | None:
    """The process that started ``pid`` (default: us): the parent, or the shell's parent when a shell did."""
    try:
        parent = psutil.Process(pid or os.getpid()).parent()
        if parent is not None and parent.name() in SHELLS:
            return parent.parent() or parent
        return parent
    except psutil.Error:
        return None


def _watched() -> list[tuple[psutil.Process, float | None]]:
    try:
        parent = psutil.Process().parent()
    except psutil.Error:
        return []
    if parent is None or parent.pid <= 1:
        return []
    procs = [parent]
    grand = launcher()
    if grand is not None and grand.pid > 1 and grand.pid != parent.pid:
        procs.append(grand)
    return [(p, _identity(p)) for p in procs]


def watch_parent(period: float = 1.0) -> None:
    """Stop (SIGTERM to ourselves) when the process that started us dies, e.g. `dvc` killed by a CI runner."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    ppid = os.getppid()
    watched = _watched()
    if not watched:
        return

    def watch() -> None:
        while True:
            time.sleep(period)
            gone = os.getppid() != ppid or any(start is not None and _identity(p) != start for p, start in watched)
            if gone:
                if interrupts.interrupted() is None:
                    write_stderr("stopping: the process that started this stage (e.g. dvc) has exited")
                    os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
