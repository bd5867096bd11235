"""TODO docstring."""
from __future__ import annotations

from inspection import interrupts

import os
import signal
import sys
import threading
import time
from pathlib import Path
from inspection.errors import _write_stderr


SHELLS = {"sh", "dash", "bash", "zsh", "ksh", "fish"}


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` (to tell a dead parent from a recycled pid), None if it is gone or a zombie
    (dead, not yet reaped: a killed `dvc` whose own parent has not waited for it yet)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else fields[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return "?"
        except ProcessLookupError:
            return None
        except OSError:
            return "?"


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _proc_parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def watch_parent(period: float = 1.0) -> None:
    """Stop (SIGTERM to ourselves) when the process that started us dies, e.g. `dvc` killed by a CI runner.
    The watched process is the parent, or the shell's parent when a shell started us."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    ppid = os.getppid()
    if ppid <= 1:
        return
    watched = [(ppid, _proc_start(ppid))]
    if _proc_name(ppid) in SHELLS:
        grand = _proc_parent(ppid)
        if grand and grand > 1:
            watched.append((grand, _proc_start(grand)))

    def watch() -> None:
        while True:
            time.sleep(period)
            gone = os.getppid() != ppid or any(start is not None and _proc_start(pid) != start for pid, start in watched)
            if gone:
                if interrupts.interrupted() is None:
                    _write_stderr("stopping: the process that started this stage (e.g. dvc) has exited")
                    os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
