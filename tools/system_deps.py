"""The system packages the pipeline needs, installed when we may, or the one command that installs them.

Usage: python tools/system_deps.py [--postgres] [--params params.yaml]      (run by `make install`)

Needs: Chromium at web.chromium (unless web.require_browser is false; Debian package chromium), Node.js with npm
(nodejs npm), and with --postgres (`make mlflow-server`, the team server tests) PostgreSQL's initdb (postgresql).
Run as root on Debian/Ubuntu it installs what is missing with apt-get (APT_GET overrides the command, for tests)
and checks again. Otherwise it prints the exact `sudo apt-get install ...` line and exits 2, so `make run`
stops before any work.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def missing(params: dict, postgres: bool) -> dict[str, str]:
    """Debian package -> what is missing, for everything not found."""
    web = params.get("web") or {}
    out = {}
    chromium = Path(str(web.get("chromium", "/usr/bin/chromium"))).expanduser()
    if web.get("require_browser", True) and not (chromium.is_file() and os.access(chromium, os.X_OK)):
        out["chromium"] = f"Chromium at web.chromium {chromium}"
    if shutil.which("node") is None or shutil.which("npm") is None:
        out["nodejs npm"] = "Node.js with npm (the browser bundle's TF.js runtime and its parity check)"
    if postgres and not (shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb")):
        out["postgresql"] = "PostgreSQL (initdb) for the team MLflow server"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--postgres", action="store_true", help="also PostgreSQL (make mlflow-server, team tests)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"), help="params.yaml (web.chromium, web.require_browser)")
    args = ap.parse_args(argv)
    try:
        params = yaml.safe_load(Path(args.params).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: cannot read {args.params} ({exc}); fix it, then run make install again", file=sys.stderr)
        return 2
    need = missing(params, args.postgres)
    if not need:
        print("system packages: all present")
        return 0
    packages = " ".join(need)
    apt = os.environ.get("APT_GET") or shutil.which("apt-get")
    what = "; ".join(need.values())
    if apt and os.geteuid() == 0:
        print(f"system packages: installing {packages} ({what})", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", *packages.split()]):
            if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
                print(f"error: `{' '.join(cmd)}` failed; run it by hand to see why", file=sys.stderr)
                return 2
        still = missing(params, args.postgres)
        if still:
            print(f"error: still missing after apt-get: {'; '.join(still.values())}; if Chromium is installed "
                  "elsewhere, set web.chromium in params.yaml", file=sys.stderr)
            return 2
        print("system packages: installed")
        return 0
    how = (f"sudo apt-get install -y {packages}" if apt else
           f"install {packages} with your system's package manager (Debian/Ubuntu: sudo apt-get install -y {packages})")
    print(f"error: missing {what}; run: {how}   then make again (machines that cannot have a browser: set "
          "web.require_browser: false in params.yaml)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
