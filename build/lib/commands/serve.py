"""Serve the browser bundle (the inspector page, default models/web) over http until Ctrl-C.

    python -m commands.serve [models/web] [--port 8000] [--host 127.0.0.1]     (make serve)

--port 0 picks a free port. It listens on 127.0.0.1 by default; any other --host prints a warning (no login, no
https, and browsers allow the camera only over https or on localhost). The server itself is
inspection.deploy.server.serve.
"""
from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.deploy.server import check_port, is_loopback, serve


def main(prog: str = "python -m commands.serve") -> None:
    ap = argparse.ArgumentParser(prog=prog, description="Serve the browser bundle (the inspector page) over http.")
    ap.add_argument("directory", nargs="?", default="models/web")
    ap.add_argument("--port", default="8000", help="TCP port (default 8000; 0 picks a free one)")
    ap.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every network)")
    args = ap.parse_args(sys.argv[1:])
    try:
        port = int(args.port)
    except ValueError:
        raise UserError(f"--port {args.port!r} is not a number; e.g. --port 8000") from None
    check_port(port)
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach this machine can open the inspector (no "
              f"login, no https; browsers allow the camera only over https or on localhost). Serve it behind a "
              f"web server with https for the line (README: Deploying to a browser).", file=sys.stderr)
    with serve(Path(args.directory), port, args.host) as url:
        print(f"serving {args.directory} at {url} (Ctrl-C to stop)", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    cli(main)()
