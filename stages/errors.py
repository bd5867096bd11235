"""User-facing errors: one line that says what went wrong and what to do."""
from __future__ import annotations

import functools
import signal
import sys
from typing import Callable


class UserError(Exception):
    """An error the user can fix (bad params, missing data, no network...).

    The message is printed as one line, without a traceback.
    """


def cli(main: Callable[[], None]) -> Callable[[], None]:
    """Wrap a stage's ``main`` so user errors print one line and exit with status 2."""

    @functools.wraps(main)
    def wrapper() -> None:
        # progress lines must reach `dvc repro`'s log as they happen, not when a pipe buffer fills
        sys.stdout.reconfigure(line_buffering=True)
        # `kill` / a CI timeout: unwind like Ctrl-C so staged outputs are discarded
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            main()
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("interrupted: no partial outputs were written", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper


def _interrupt(signum, frame):
    raise KeyboardInterrupt
