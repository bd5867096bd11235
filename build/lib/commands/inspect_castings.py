"""The plant's console command, installed by `pip install .` (pyproject.toml [project.scripts]):

    inspect-castings PATH... [--model ...] [--out FILE.csv] [--batch 64] [--workers 2]   = python -m commands.predict
    inspect-castings serve [models/web] [--port 8000] [--host 127.0.0.1]                 = python -m commands.serve

Same flags, help and exit codes as the two modules; it runs from any directory.
"""
from __future__ import annotations

import functools
import sys

from inspection.runner.cli import cli

PROG = "inspect-castings"


def entry() -> None:
    if sys.argv[1:2] == ["serve"]:
        from commands.serve import main as serve

        sys.argv = [f"{PROG} serve", *sys.argv[2:]]
        cli(functools.partial(serve, prog=f"{PROG} serve"))()
    else:
        from commands.predict import main as predict

        cli(functools.partial(predict, prog=PROG), tensorflow=True)()


if __name__ == "__main__":
    entry()
