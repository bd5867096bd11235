"""Stop signals: SIGINT and SIGTERM end a stage at a safe moment, with nothing half-published.

A handler records the signal and raises KeyboardInterrupt; if that exception is swallowed (an interrupt
that lands in a garbage-collector callback, e.g. jax's ``_xla_gc_callback``, is only printed as "Exception
ignored"), it is raised again. ``publishing()`` surrounds the renames that publish a stage's outputs: it
refuses once a signal was seen and defers a signal that arrives during them. Inside ``at_safe_points()``
a signal is only recorded and code raises it at its own safe points (``check_interrupted``). A stage still
running ``GRACE_SECONDS`` after the signal (stuck in native code) is ended without publishing."""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Callable, Iterator
from inspection.errors import write_stderr


GRACE_SECONDS = 15.0  # after a signal, a stage stuck in native code is ended this much later
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
_signal: int | None = None           # the first SIGINT/SIGTERM received
_published = False                   # a StagedOutputs.commit finished (an interrupt after it cannot undo it)
publish_lock = threading.Lock()      # held while outputs are renamed into place; the forced exit waits for it
_outputs_message: Callable[[], str] = lambda: "nothing was published"   # see set_outputs_message


def set_outputs_message(message: Callable[[], str]) -> None:
    """What the forced exit says about the stage's outputs; the stage runner (inspection.runner.cli) sets a
    DVC-aware one (which `dvc checkout` restores them)."""
    global _outputs_message
    _outputs_message = message


def published() -> bool:
    """Whether a StagedOutputs.commit finished in this process."""
    return _published


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
        write_stderr(f"interrupted: still running {GRACE_SECONDS:.0f} s after {signal.Signals(_signal).name}; "
                      f"stopping now. {_outputs_message()}")
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
