"""Errors a user can fix, and the one line that reports them.

A ``UserError`` carries a message that says what went wrong and what to do; the stage runner
(inspection.runner.cli) prints it as one line and exits 2. ``disk_error_message`` turns a read-only, full or
forbidden disk into such a line, naming the output rather than its temporary name. Imports nothing of ours."""
from __future__ import annotations

import errno
import os
import re
import sys


class UserError(Exception):
    """An error the user can fix (bad params, missing data, no network...).

    The message is printed as one line, without a traceback.
    """


DISK_ERRORS = {errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on device",
               errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied", errno.EPERM: "not permitted"}


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def write_stderr(line: str) -> None:
    try:
        sys.stderr.write(one_line(line) + "\n")
        sys.stderr.flush()
    except Exception:
        os.write(2, (one_line(line) + "\n").encode("utf-8", "backslashreplace"))


def disk_error_message(exc: OSError, action: str = "write") -> str | None:
    """One line for a read-only / full disk / permission error, naming the path; None for other errors. A short
    write without an errno (numpy's "N requested and M written", what a full disk gives under tofile) is a full
    disk too."""
    if exc.errno is None and re.search(r"\d+ requested and \d+ written", str(exc)):
        where = re.sub(r"\.partial-[0-9a-f]{8}\.", "", str(exc.filename)) if exc.filename else os.getcwd()
        return f"cannot {action} {where}: no space left on device (a short write); free some space and run the " \
               "stage again"
    if exc.errno not in DISK_ERRORS:
        return None
    # a staged output's temporary name -> the output's own name (data/split/.partial-1a2b3c4d.manifest.csv)
    where = re.sub(r"\.partial-[0-9a-f]{8}\.", "", str(exc.filename)) if exc.filename else os.getcwd()
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
           errno.EROFS: "run from a writable checkout"}.get(exc.errno, "check the permissions")
    return f"cannot {action} {where}: {DISK_ERRORS[exc.errno]}; {fix} and run the stage again"
