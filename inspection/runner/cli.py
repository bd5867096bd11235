"""The stage entry point: one line that says what went wrong and what to do, and a clean stop.

``cli(main)`` wraps every stage's ``main`` (``python -m stages.<name>``):

* SIGINT and SIGTERM stop the stage at any moment with exit status 130 / 143 and nothing published
  (inspection.interrupts). The handlers are installed before TensorFlow is imported (stages import it
  inside ``main``).
* A stage run by ``dvc`` stops when dvc dies: PR_SET_PDEATHSIG on Linux plus a parent watch
  (inspection.runner.watchdog).
* Before ``main`` runs, ``inspection.runner.preflight`` checks what can be checked in a second: all of params.yaml,
  the tracking store, missing inputs, writable outputs, and the web stage's tools when it will run.
* A ``UserError``, a read-only or full disk print one line (exit 2); under ``dvc repro`` the line says how
  to get the previous outputs back (DVC removes a stage's outputs before running it).
"""
from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path
from typing import Callable
from inspection.artifacts import stage_name
from inspection.errors import UserError, write_stderr, disk_error_message
from inspection import interrupts
from inspection.interrupts import EXIT_STATUS, install_signal_handlers
from inspection.runner.watchdog import watch_parent


def _under_dvc_with_previous_outputs() -> str | None:
    """The stage name when DVC ran us and removed outputs it can restore (a committed dvc.lock entry)."""
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return None
    try:
        from inspection.artifacts import in_temp_workspace

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


def _stop_exit() -> SystemExit:
    sig = interrupts.interrupted() or signal.SIGINT
    if interrupts.published():
        name = stage_name() or "<stage>"
        dvc = (f", but DVC has not recorded them: `dvc commit {name}` records them, `dvc checkout {name}` goes back"
               if os.environ.get("DVC_STAGE") else "")
        write_stderr(f"interrupted ({signal.Signals(sig).name}) after the outputs were published: they are "
                      f"complete{dvc}")
    else:
        write_stderr(f"interrupted ({signal.Signals(sig).name}): {_nothing_published()}")
    return SystemExit(EXIT_STATUS.get(sig, 130))


def _fail(message: str) -> SystemExit:
    back = way_back()
    write_stderr(f"error: {message}" + (f" ({back})" if back else ""))
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
        write_stderr(f"note: {back}")
    raise SystemExit(1)


TENSORFLOW_STAGES = {"train", "evaluate", "export", "promote", "report", "web"}
VERBOSE_ENV = "INSPECTION_TF_LOGS"   # =1: TensorFlow's C++ start-up lines are shown


def quiet_tensorflow() -> None:
    """Import TensorFlow once with file descriptor 2 pointed at /dev/null: its C++ start-up lines (absl's
    pre-init notice, cuDNN/cuBLAS factory registration on a machine without a GPU, "computation placer already
    registered") bypass TF_CPP_MIN_LOG_LEVEL. Python errors still surface: an import error is raised after the
    descriptor is restored. TensorFlow's own C++ log lines at run time (e.g. "NodeDef mentions attribute
    use_unbounded_threadpool ...", logged as errors but harmless) are off too (TF_CPP_MIN_LOG_LEVEL=3; its Python
    errors still raise). INSPECTION_TF_LOGS=1 shows everything."""
    if os.environ.get(VERBOSE_ENV) == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if stage_name() in TENSORFLOW_STAGES:   # at import: a stage module may import Keras/TensorFlow at its top,
    quiet_tensorflow()                   # before cli() wraps its main


def cli(main: Callable[[], None], tensorflow: bool | None = None) -> Callable[[], None]:
    """Wrap a stage's ``main``: signals, parent watch, preflight checks, one-line errors (exit 2). ``tensorflow``
    (default: the stages in TENSORFLOW_STAGES): import it quietly first (quiet_tensorflow)."""

    @functools.wraps(main)
    def wrapper() -> None:
        # progress lines must reach `dvc repro`'s log as they happen; odd file names must not crash a print
        sys.stdout.reconfigure(line_buffering=True, errors="backslashreplace")
        sys.stderr.reconfigure(errors="backslashreplace")
        install_signal_handlers()
        interrupts.set_outputs_message(_nothing_published)
        if os.environ.get("DVC_STAGE"):  # run by dvc: stop when dvc dies (a direct or nohup run is left alone)
            watch_parent()
        try:
            from inspection.runner.preflight import preflight
            from inspection.tracking.store import configure_http

            configure_http()  # MLflow's HTTP retries in seconds, not minutes, for every entry point
            preflight(stage_name())
            if tensorflow or (tensorflow is None and stage_name() in TENSORFLOW_STAGES):
                quiet_tensorflow()
            main()
            if interrupts.interrupted() is not None:  # the interrupt was swallowed somewhere; commit refused to publish
                raise KeyboardInterrupt
        except UserError as exc:
            if interrupts.interrupted() is not None:
                _exit_now(_stop_exit().code)
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:
            _exit_now(_stop_exit().code)
        except OSError as exc:
            if interrupts.interrupted() is not None:
                _exit_now(_stop_exit().code)
            message = disk_error_message(exc)
            if message is None:
                _unexpected()
            raise _fail(message) from None
        except Exception:
            # a stop signal raised inside native code can surface as another exception (e.g. TensorFlow's
            # "SystemError: ... bad argument to internal function"): the stop is what happened
            if interrupts.interrupted() is not None:
                _exit_now(_stop_exit().code)
            _unexpected()

    return wrapper
