"""User-facing errors and the stage entry point: one line that says what went wrong and what to do.

``cli(main)`` wraps every stage's ``main`` (``python -m stages.<name>``):

* SIGINT and SIGTERM stop the stage at any moment with exit status 130 / 143 and nothing published.
  The handlers are installed before TensorFlow is imported (stages import it inside ``main``). A handler
  records the signal and raises KeyboardInterrupt; if that exception is swallowed (an interrupt that lands
  in a garbage-collector callback, e.g. jax's ``_xla_gc_callback``, is only printed as "Exception ignored"),
  it is raised again, ``StagedOutputs.commit`` refuses to publish once a signal was seen, and a stage still
  running ``GRACE_SECONDS`` after the signal (stuck in native code) is ended without publishing.
* A stage run by ``dvc`` stops when dvc dies: PR_SET_PDEATHSIG on Linux plus a parent-PID watchdog.
* Before ``main`` runs, ``stages.preflight`` checks what can be checked in a second: all of params.yaml,
  the tracking store, missing inputs, writable outputs, and the web stage's tools when it will run.
* A ``UserError``, a read-only or full disk print one line (exit 2); under ``dvc repro`` the line says how
  to get the previous outputs back (DVC removes a stage's outputs before running it).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator


class UserError(Exception):
    """An error the user can fix (bad params, missing data, no network...).

    The message is printed as one line, without a traceback.
    """


GRACE_SECONDS = 15.0  # after a signal, a stage stuck in native code is ended this much later
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
DISK_ERRORS = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
               errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}

_signal: int | None = None           # the first SIGINT/SIGTERM received
_published = False                   # a StagedOutputs.commit finished (an interrupt after it cannot undo it)
publish_lock = threading.Lock()      # held while outputs are renamed into place; the forced exit waits for it


# ---- interrupts ------------------------------------------------------------------------------------------

def interrupted() -> int | None:
    """The signal number that asked the stage to stop, or None."""
    return _signal


def check_interrupted() -> None:
    """Raise KeyboardInterrupt if a stop signal arrived (a safe point; cheap)."""
    if _signal is not None:
        raise KeyboardInterrupt


_committing = False
_deferred = 0


@contextlib.contextmanager
def at_safe_points() -> Iterator[None]:
    """Inside this block a stop signal is only recorded; the code must call ``check_interrupted`` at its safe
    points (train: a Keras callback between batches). Raising KeyboardInterrupt at an arbitrary bytecode inside
    Keras' fit can land while tf.data builds an epoch's iterator and corrupt native memory (seen as
    "free(): invalid next size" and SIGABRT instead of exit 130). The stop deadline still applies."""
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1
    check_interrupted()


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """Around the renames that publish a stage's outputs: refused after a stop signal; a signal arriving
    during them is acted on when they are done (all outputs or none), and the forced exit waits for them."""
    global _committing, _published
    with publish_lock:
        check_interrupted()
        _committing = True
        try:
            yield
            _published = True
        finally:
            _committing = False
    check_interrupted()


_deadline_started = threading.Lock()


def _note_signal(signum: int) -> None:
    """Record the stop signal and start the deadline (once), from whichever thread learns of it first."""
    global _signal
    if _signal is None:
        _signal = signum
    if _deadline_started.acquire(blocking=False):
        threading.Thread(target=_force_exit_later, name="stop-deadline", daemon=True).start()


def _handler(signum, frame):
    _note_signal(signum)
    if _committing or _deferred:  # publishing() / the next safe point raises it
        return
    raise KeyboardInterrupt


def _watch_wakeup_fd(fd: int) -> None:
    """Python runs signal handlers only in the main thread, between bytecodes: a main thread stuck in native
    code (a long TensorFlow op) would never start the deadline. The C-level handler also writes the signal
    number to this pipe, so this thread starts it."""
    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        for signum in data:
            if signum in EXIT_STATUS:
                _note_signal(signum)


def _force_exit_later() -> None:
    time.sleep(GRACE_SECONDS)
    with publish_lock:  # never cut a publication in half
        _write_stderr(f"interrupted: still running {GRACE_SECONDS:.0f} s after {signal.Signals(_signal).name}; "
                      f"stopping now. {_nothing_published()}")
        os._exit(EXIT_STATUS.get(_signal, 130))


def _unraisable(args) -> None:
    """An interrupt raised inside a gc callback or __del__ is swallowed by Python: deliver it again."""
    if _signal is not None and args.exc_type is not None and issubclass(args.exc_type, KeyboardInterrupt):
        import _thread

        # from another thread, a moment later: run inside this hook, the handler's exception would be
        # swallowed again
        threading.Timer(0.05, _thread.interrupt_main, (_signal,)).start()
        return
    sys.__unraisablehook__(args)


def install_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    sys.unraisablehook = _unraisable
    try:
        r, w = os.pipe()
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        threading.Thread(target=_watch_wakeup_fd, args=(r,), name="signal-watch", daemon=True).start()
    except (OSError, ValueError):
        pass


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
                if _signal is None:
                    _write_stderr("stopping: the process that started this stage (e.g. dvc) has exited")
                    os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# ---- messages ------------------------------------------------------------------------------------------

def stage_name() -> str | None:
    """The dvc.yaml stage this process runs: $DVC_STAGE under DVC, else from `python -m stages.<name>`."""
    name = os.environ.get("DVC_STAGE")
    if name:
        return name.rsplit(":", 1)[-1]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    mod = getattr(spec, "name", "") or ""
    return mod.split(".", 1)[1] if mod.startswith("stages.") else None


def _under_dvc_with_previous_outputs() -> str | None:
    """The stage name when DVC ran us and removed outputs it can restore (a committed dvc.lock entry)."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return None
    try:
        from stages.paths import in_temp_workspace

        if in_temp_workspace():  # `dvc exp run --temp` / queue: a throw-away copy, nothing to restore
            return None
        import yaml

        lock = yaml.safe_load(Path(os.environ.get("DVC_ROOT", "."), "dvc.lock").read_text()) or {}
        return stage if (lock.get("stages") or {}).get(stage.rsplit(":", 1)[-1], {}).get("outs") else None
    except Exception:  # no lock file or unreadable: say nothing rather than something wrong
        return None


def way_back() -> str:
    stage = _under_dvc_with_previous_outputs()
    if stage:
        return (f"DVC removed the previous outputs of stage '{stage}' before running it: `dvc checkout {stage}` "
                "restores them")
    return ""


def _nothing_published() -> str:
    back = way_back()
    return "nothing was published; " + (back if back else "the previous outputs are unchanged")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _write_stderr(line: str) -> None:
    try:
        sys.stderr.write(_one_line(line) + "\n")
        sys.stderr.flush()
    except Exception:
        os.write(2, (_one_line(line) + "\n").encode("utf-8", "backslashreplace"))


def disk_error_message(exc: OSError, action: str = "write") -> str | None:
    """One line for a read-only / full disk / permission error, naming the path; None for other errors."""
    if exc.errno not in DISK_ERRORS:
        return None
    # a staged output's temporary name -> the output's own name (data/split/.partial-1a2b3c4d.manifest.csv)
    where = re.sub(r"\.partial-[0-9a-f]{8}\.", "", str(exc.filename)) if exc.filename else os.getcwd()
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
           errno.EROFS: "run from a writable checkout"}.get(exc.errno, "check the permissions")
    return f"cannot {action} {where}: {DISK_ERRORS[exc.errno]}; {fix} and run the stage again"


# ---- the entry point -----------------------------------------------------------------------------------

def _stop_exit() -> SystemExit:
    sig = _signal or signal.SIGINT
    if _published:
        name = stage_name() or "<stage>"
        dvc = (f", but DVC has not recorded them: `dvc commit {name}` records them, `dvc checkout {name}` goes back"
               if os.environ.get("DVC_STAGE") else "")
        _write_stderr(f"interrupted ({signal.Signals(sig).name}) after the outputs were published: they are "
                      f"complete{dvc}")
    else:
        _write_stderr(f"interrupted ({signal.Signals(sig).name}): {_nothing_published()}")
    return SystemExit(EXIT_STATUS.get(sig, 130))


def _fail(message: str) -> SystemExit:
    back = way_back()
    _write_stderr(f"error: {message}" + (f" ({back})" if back else ""))
    return SystemExit(2)


def _exit_now(code: int) -> None:
    """After a stop signal: outputs are discarded and the message is out, so skip the interpreter's slow
    teardown (TensorFlow's threads and atexit hooks take seconds) and stop at once."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def _unexpected() -> None:
    """A bug, not a user error: the traceback, then how to get the previous outputs back under DVC."""
    import traceback

    traceback.print_exc()
    back = way_back()
    if back:
        _write_stderr(f"note: {back}")
    raise SystemExit(1)


def cli(main: Callable[[], None]) -> Callable[[], None]:
    """Wrap a stage's ``main``: signals, parent watch, preflight checks, one-line errors (exit 2)."""

    @functools.wraps(main)
    def wrapper() -> None:
        # progress lines must reach `dvc repro`'s log as they happen; odd file names must not crash a print
        sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")
        sys.stderr.reconfigure(errors="backslashreplace")
        install_signal_handlers()
        if os.environ.get("DVC_STAGE"):  # run by dvc: stop when dvc dies (a direct or nohup run is left alone)
            watch_parent()
        try:
            from stages.preflight import preflight
            from stages.tracking import configure_http

            configure_http()  # MLflow's HTTP retries in seconds, not minutes, for every entry point
            preflight(stage_name())
            main()
            if _signal is not None:  # the interrupt was swallowed somewhere; commit refused to publish
                raise KeyboardInterrupt
        except UserError as exc:
            if _signal is not None:
                _exit_now(_stop_exit().code)
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:
            _exit_now(_stop_exit().code)
        except OSError as exc:
            if _signal is not None:
                _exit_now(_stop_exit().code)
            message = disk_error_message(exc)
            if message is None:
                _unexpected()
            raise _fail(message) from None
        except Exception:
            # a stop signal raised inside native code can surface as another exception (e.g. TensorFlow's
            # "SystemError: ... bad argument to internal function"): the stop is what happened
            if _signal is not None:
                _exit_now(_stop_exit().code)
            _unexpected()

    return wrapper
